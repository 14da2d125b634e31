"""The loop's schedule checked against numbers computed here, not against a second run of the same loop:
accumulation windows that start with each epoch, data that changes from epoch to epoch, the learning-rate step."""

import json
import shutil
import sys

import pytest

from hf_vssl.train.arguments import PretrainArguments
from hf_vssl.train.pretrain import learning_rate_at

from .training_runs import PRETRAIN, TINY_RUN, run_args, run_config, run_ok
from .video_factory import index_frames, write_video

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


@pytest.fixture(scope="module")
def many_videos(tmp_path_factory):
    """Folders of 150 and 384 tiny real videos (18 frames of 32x32, four encodings copied under many names)."""
    root = tmp_path_factory.mktemp("many")
    originals = [
        write_video(root / f"original_{i}.mp4", index_frames(18 + i, (32, 32)), gop=6) for i in range(4)
    ]
    folders = {}
    for count in (150, 384):
        folder = folders[count] = root / str(count)
        folder.mkdir()
        for i in range(count):
            shutil.copyfile(originals[i % 4], folder / f"video_{i:03d}.mp4")
    return folders


# 8-frame clips (the fewest r3d_hara takes): the tiny videos are long enough for MLFO's two clips
TINY_CLIPS = {**TINY_RUN["model"], "num_frames": 8}


def _train_in_this_process(args: list[str]) -> None:
    """The loop as `training/pretrain.py` runs it, without a new interpreter's imports (seconds per run)."""
    from accelerate.state import AcceleratorState

    from hf_vssl.train.arguments import parse_arguments
    from hf_vssl.train.pretrain import train

    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        train(parse_arguments(args, PretrainArguments))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.parametrize(
    "num_videos, workers, batch",
    [
        # each worker batches its 37-38 videos as 2 full batches and a short one; the short ones are joined, so
        # the epoch trains on 144 = 9 x 16 videos (per-worker batching and drop_last gave 128)
        (150, 4, 16),
        # each worker's 27-28 videos are less than one batch: all are joined into 6 full batches (it used to fail
        # with "Epoch 0 yielded no batch")
        (384, 14, 64),
    ],
)
@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_an_epoch_trains_on_every_video_but_one_partial_batch(
    tmp_path, many_videos, num_videos, workers, batch
):
    config = run_config(
        tmp_path,
        model=TINY_CLIPS,
        per_device_train_batch_size=batch,
        dataloader_num_workers=workers,
        checkpointing_steps=100,
        logging_steps=100,
    )
    out = tmp_path / "run"
    _train_in_this_process(run_args(config, many_videos[num_videos], out, "--record_sample_keys"))
    keys = [line.split("\t")[1] for line in (out / "sample_keys_rank0.txt").read_text().splitlines()]
    assert len(keys) == len(set(keys)) == (num_videos // batch) * batch
    records = map(json.loads, (out / "logs" / "metrics.jsonl").read_text().splitlines())
    (epoch,) = [r for r in records if "data/epoch" in r]
    assert epoch["data/videos_in_epoch"] == len(keys) and epoch["step"] == num_videos // batch
