"""Evaluate an encoder on labelled video sources: decode evaluation views, extract features, run the protocols."""

import json
from pathlib import Path

import torch

from hf_vssl.data.loader import build_view_dataloader, stage2_placement
from hf_vssl.data.recipes import build_recipe
from hf_vssl.data.sources import align_labels, load_video_source, source_label_names

from .features import VideoFeatures, extract_features
from .suite import PROTOCOLS, evaluate_features, format_results_table, nest_results


def evaluation_recipe(
    num_frames: int, image_size: int, num_clips: int = 5, spatial_crops: str = "center", **overrides
):
    """Evaluation views: ``num_clips`` uniformly spaced clips per video times the spatial crops, no augmentation."""
    return build_recipe(
        "eval",
        num_frames=num_frames,
        output_size=(image_size, image_size),
        num_clips=num_clips,
        spatial_crops=spatial_crops,
        resize_short_side=max(image_size, round(image_size * 128 / 112)),
        **overrides,
    )


def video_features(
    encoder,
    spec: str,
    recipe,
    *,
    split: str = "train",
    batch_size: int = 8,
    num_workers: int = 2,
    device=None,
    label_names: list[str] | None = None,
) -> VideoFeatures:
    """Clip-averaged encoder features of every video of a labelled source (one process).

    ``label_names`` renumbers the source's classes to those names (see :func:`align_labels`), so that two
    sources compared by a protocol agree on what each class id means.
    """
    source = load_video_source(spec, split=split)
    if label_names is not None:
        source = align_labels(source, label_names)
    require_labels(source, spec)
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    placement = stage2_placement(device)
    loader = build_view_dataloader(
        source, recipe, batch_size=batch_size, num_workers=num_workers, seed=0, placement=placement
    )

    def batches():
        for batch in loader:
            batch.pop("num_skipped", None)
            yield placement.finish(batch, recipe)

    features = extract_features(encoder, batches(), device=device)
    if (features.labels < 0).any():
        raise ValueError(f"{spec} has videos without labels: evaluation protocols need every video labelled.")
    return features


def require_labels(source, spec: str) -> None:
    """Fail early, with the source's name, when ``source`` is empty or has no labels (from its first video)."""
    first = next(iter(source), None)
    if first is None:
        raise ValueError(f"{spec} holds no videos.")
    if source_label_names(source) is None and first["label"] < 0:
        raise ValueError(
            f"{spec} has no labels: evaluation protocols need a labelled source (class sub-folders)."
        )


def evaluate_encoder(
    encoder,
    train_spec: str,
    test_spec: str,
    *,
    protocols=PROTOCOLS,
    num_frames: int = 16,
    image_size: int = 112,
    num_clips: int = 5,
    spatial_crops: str = "center",
    batch_size: int = 8,
    num_workers: int = 2,
    train_split: str = "train",
    test_split: str = "validation",
    accelerator=None,
    **protocol_kwargs,
) -> dict[str, float]:
    """Features of both sources (clip-averaged), then the protocols: ``{"knn/top1": ..., "retrieval/R@1": ...}``.

    With an ``accelerator`` the main process evaluates and the others wait: evaluation sets are small next to
    pretraining data, and one process keeps the features in one piece.
    """
    results: dict[str, float] = {}
    if accelerator is None or accelerator.is_main_process:
        recipe = evaluation_recipe(num_frames, image_size, num_clips, spatial_crops)
        kwargs = dict(recipe=recipe, batch_size=batch_size, num_workers=num_workers)
        train = video_features(encoder, train_spec, split=train_split, **kwargs)
        # each source numbers its own classes: the test ids follow the training names
        names = source_label_names(load_video_source(train_spec, split=train_split))
        test = video_features(encoder, test_spec, split=test_split, label_names=names, **kwargs)
        results = evaluate_features(train, test, protocols=protocols, **protocol_kwargs)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return results


def write_results(
    results_by_model: dict[str, dict[str, float]], path: str | Path, dataset: str, split: str
) -> None:
    """Results JSON in the form ``hf_vssl.hub`` reads for model cards (percentages, nested by protocol)."""
    payload = {
        name: {"dataset": dataset, "split": split, **nest_results(results)}
        for name, results in results_by_model.items()
    }
    Path(path).write_text(json.dumps(payload, indent=2))


__all__ = [
    "evaluate_encoder",
    "evaluation_recipe",
    "format_results_table",
    "require_labels",
    "video_features",
    "write_results",
]
