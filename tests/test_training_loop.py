"""The loop's schedule checked against numbers computed here, not against a second run of the same loop:
accumulation windows that start with each epoch, data that changes from epoch to epoch, the learning-rate step."""

import json
import sys

from hf_vssl.train.arguments import PretrainArguments
from hf_vssl.train.pretrain import learning_rate_at

from .training_runs import PRETRAIN, run_args, run_config, run_ok

NUM_VIDEOS = 12  # tiny_data's training folder: 4 classes x 3 videos


def _logged_steps(output_dir):
    lines = (output_dir / "logs" / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "train/loss" in r]


def test_accumulation_windows_and_learning_rate_follow_the_epochs(tmp_path, tiny_data):
    batch, accumulation, epochs, learning_rate = 2, 4, 3, 1e-3
    out = tmp_path / "run"
    config = run_config(tmp_path, num_train_epochs=epochs, gradient_accumulation_steps=accumulation)
    options = ["--learning_rate", str(learning_rate), "--lr_decay_epochs", "1", "--lr_decay_factor", "0.1"]
    run_ok([sys.executable, str(PRETRAIN), *run_args(config, tiny_data["train"], out, *options)])

    # Each epoch has 12 / 2 = 6 batches: one whole window of 4 and an incomplete one that is dropped, so one
    # optimizer step per epoch. Windows running across epochs would take floor(18 / 4) = 4 steps instead.
    batches_per_epoch = NUM_VIDEOS // batch
    steps_per_epoch = batches_per_epoch // accumulation
    records = _logged_steps(out)
    assert [r["step"] for r in records] == list(range(1, epochs * steps_per_epoch + 1))
    assert [r["train/epoch"] for r in records] == [e for e in range(epochs) for _ in range(steps_per_epoch)]
    # the rate drops by the factor from the decay epoch itself on, not one epoch later
    expected = [learning_rate * (0.1 if r["train/epoch"] >= 1 else 1.0) for r in records]
    assert [r["train/lr"] for r in records] == expected


def test_every_epoch_draws_its_own_order(tmp_path, tiny_data):
    out = tmp_path / "run"
    config = run_config(tmp_path, num_train_epochs=3, shuffle_buffer_size=12)
    run_ok(
        [sys.executable, str(PRETRAIN), *run_args(config, tiny_data["train"], out, "--record_sample_keys")]
    )
    orders = {}
    for line in (out / "sample_keys_rank0.txt").read_text().splitlines():
        epoch, key = line.split("\t")
        orders.setdefault(int(epoch), []).append(key)
    assert sorted(orders) == [0, 1, 2]
    assert all(sorted(keys) == sorted(orders[0]) and len(keys) == NUM_VIDEOS for keys in orders.values())
    # 12 videos: the chance that two shuffles agree is 1 / 12!, so equal orders mean the epoch was not set
    assert orders[0] != orders[1] != orders[2] != orders[0]


def test_learning_rate_at_the_decay_boundaries():
    args = PretrainArguments(
        train_dir=".", output_dir=".", learning_rate=1.0, lr_decay_epochs=[70, 90], lr_decay_factor=0.1
    )
    rates = {epoch: learning_rate_at(args, epoch) for epoch in (0, 69, 70, 71, 89, 90, 99)}
    assert rates == {0: 1.0, 69: 1.0, 70: 0.1, 71: 0.1, 89: 0.1, 90: 0.1 * 0.1, 99: 0.1 * 0.1}
