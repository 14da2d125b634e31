"""Evaluation in two real gloo processes equals evaluation in one: each process encodes its share of the videos,
the shares are gathered (kNN bank, retrieval gallery, linear-probe training set) and every process returns the
numbers one process computes on the same data."""

import functools

import torch

from .conftest import TINY_BACKBONE
from .two_processes import run_in_two_processes

PROTOCOL_KWARGS = {"linear_probe_kwargs": {"epochs": 20}, "knn_kwargs": {"k": 3}}
CLIPS = 2


def _evaluate(train_dir: str, test_dir: str) -> tuple[dict, int]:
    """The three protocols' results and the number of clips this process encoded."""
    import hf_vssl
    from hf_vssl.evaluation.runner import evaluate_encoder

    torch.manual_seed(0)  # the same encoder in every process
    encoder = hf_vssl.MLFOModel(hf_vssl.MLFOConfig(**TINY_BACKBONE)).eval()
    encoded = []
    encoder.register_forward_pre_hook(
        lambda module, args, kwargs: encoded.append(len(kwargs["pixel_values"])), with_kwargs=True
    )
    results = evaluate_encoder(
        encoder,
        train_dir,
        test_dir,
        protocols=("linear_probe", "knn", "retrieval"),
        num_frames=8,
        image_size=32,
        num_clips=CLIPS,
        batch_size=2,
        num_workers=0,
        **PROTOCOL_KWARGS,
    )
    return results, sum(encoded)


def _worker(rank: int, train_dir: str, test_dir: str):
    return _evaluate(train_dir, test_dir)


def test_two_process_evaluation_equals_one_process(tmp_path, tiny_data):
    train_dir, test_dir = str(tiny_data["train"]), str(tiny_data["validation"])
    single_results, single_clips = _evaluate(train_dir, test_dir)
    ranks = run_in_two_processes(functools.partial(_worker, train_dir=train_dir, test_dir=test_dir), tmp_path)

    assert set(single_results) >= {"linear_probe/top1", "knn/top1", "retrieval/R@1"}
    # each process encoded its share of the 12 training and 8 test videos only: together, every clip once
    assert single_clips == (12 + 8) * CLIPS and sum(clips for _, clips in ranks) == single_clips
    assert all(0 < clips < single_clips for _, clips in ranks)
    for results, _ in ranks:
        assert results == single_results  # the same numbers, on every process
