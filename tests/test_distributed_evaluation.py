"""Evaluation in two real gloo processes equals evaluation in one: each process encodes its share of the videos,
the shares are gathered (kNN bank, retrieval gallery, linear-probe training set) and every process returns the
numbers one process computes on the same data."""

import functools

import torch

from .conftest import TINY_BACKBONE
from .two_processes import run_in_two_processes

PROTOCOL_KWARGS = {"linear_probe_kwargs": {"epochs": 20}, "knn_kwargs": {"k": 3}}
CLIPS = 2


def _evaluate(train_dir: str, test_dir: str) -> tuple[dict, int, float]:
    """The three protocols' results, the number of clips this process encoded, and a classifier's multi-view
    accuracy on this process's share of the videos (as training/finetune.py tests)."""
    import hf_vssl
    from hf_vssl.data.loader import build_view_dataloader, stage2_placement
    from hf_vssl.data.sources import align_labels, load_video_source, split_source_for_process
    from hf_vssl.distributed import rank, world_size
    from hf_vssl.evaluation.classifier import multi_view_accuracy
    from hf_vssl.evaluation.runner import evaluate_encoder, evaluation_recipe

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
    # a classifier that always says "down": 3 of the 12 training videos, split 2 / 1 over two processes, so
    # only counts summed over the processes give 3 / 12
    classifier = hf_vssl.MLFOForVideoClassification(hf_vssl.MLFOConfig(**TINY_BACKBONE, num_labels=4))
    with torch.no_grad():
        classifier.classifier.weight.zero_()
        classifier.classifier.bias.copy_(torch.tensor([1.0, 0, 0, 0]))
    recipe, placement = evaluation_recipe(8, 32, num_clips=1), stage2_placement()
    test = align_labels(load_video_source(train_dir), ["down", "left", "right", "up"])
    loader = build_view_dataloader(
        split_source_for_process(test, rank(), world_size()), recipe, 2, 0, placement=placement
    )
    return results, sum(encoded), multi_view_accuracy(classifier, loader, recipe, placement)


def _worker(rank: int, train_dir: str, test_dir: str):
    return _evaluate(train_dir, test_dir)


def test_two_process_evaluation_equals_one_process(tmp_path, tiny_folders):
    train_dir, test_dir = str(tiny_folders["train"]), str(tiny_folders["validation"])
    single_results, single_clips, single_accuracy = _evaluate(train_dir, test_dir)
    ranks = run_in_two_processes(functools.partial(_worker, train_dir=train_dir, test_dir=test_dir), tmp_path)

    assert set(single_results) >= {"linear_probe/top1", "knn/top1", "retrieval/R@1"}
    # each process encoded its share of the 12 training and 8 test videos only: together, every clip once
    assert single_clips == (12 + 8) * CLIPS and sum(clips for _, clips, _ in ranks) == single_clips
    assert all(0 < clips < single_clips for _, clips, _ in ranks)
    assert single_accuracy == 3 / 12
    for results, _, accuracy in ranks:
        assert results == single_results  # the same numbers, on every process
        assert accuracy == 3 / 12  # correct / total summed over the shares
