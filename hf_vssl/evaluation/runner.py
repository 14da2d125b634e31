"""Evaluate an encoder on labelled video sources: decode evaluation views, extract features, run the protocols.

In a distributed run (``torch.distributed`` initialised, e.g. by accelerate) every process extracts the features
of its share of the videos and the shares are gathered, so a large feature bank is computed by all processes
together; the videos are ordered by their key in every run, so the results equal those of one process.
"""

import itertools

import torch
import torch.distributed as dist

from hf_vssl.cli import UsageError
from hf_vssl.data.loader import build_view_dataloader, stage2_placement
from hf_vssl.data.recipes import EvalViews
from hf_vssl.data.sources import (
    align_labels,
    load_video_source,
    source_label_names,
    split_source_for_process,
)
from hf_vssl.distributed import rank, world_size
from hf_vssl.video_processing_vssl import VideoSSLVideoProcessor

from .features import VideoFeatures, extract_features
from .suite import PROTOCOLS, evaluate_features, format_results_table


def evaluation_processor(
    num_frames: int, image_size: int, num_clips: int | None = None, spatial_crops: str | None = None
) -> VideoSSLVideoProcessor:
    """The video processor for a model's clip size, with the evaluation views (the processor's defaults where
    ``None``): what is saved with a checkpoint, so that its pipeline sees what measured its card."""
    settings = {"num_clips": num_clips, "spatial_crops": spatial_crops}
    return VideoSSLVideoProcessor.for_clip_size(
        num_frames, image_size, **{k: v for k, v in settings.items() if v is not None}
    )


def evaluation_recipe(
    num_frames: int,
    image_size: int,
    num_clips: int | None = None,
    spatial_crops: str | None = None,
    **overrides,
) -> EvalViews:
    """Evaluation views: ``num_clips`` uniformly spaced clips per video times the spatial crops, no augmentation;
    the recipe of :func:`evaluation_processor` (``overrides``: further `EvalViews` fields)."""
    return EvalViews.from_processor(
        evaluation_processor(num_frames, image_size, num_clips, spatial_crops), **overrides
    )


def evaluation_batches(
    spec: str,
    recipe,
    *,
    split: str = "train",
    batch_size: int = 8,
    num_workers: int = 2,
    device=None,
    label_names: list[str] | None = None,
    process_index: int = 0,
    num_processes: int = 1,
    require_labelled: bool = True,
):
    """The rendered evaluation views of every video of a labelled source, batch by batch (``pixel_values``
    ``[B, V, T, C, H, W]``, ``labels``, ``keys``: each video's key), on ``device``.

    ``label_names`` renumbers the source's classes to those names (see :func:`align_labels`), so that two
    sources compared by a protocol agree on what each class id means. ``process_index`` of ``num_processes``
    reads only its share of the videos (:func:`split_source_for_process`). ``require_labelled=False`` accepts a
    source without labels (``labels`` then holds -1).
    """
    source = load_video_source(spec, split=split)
    if label_names is not None:
        source = align_labels(source, label_names)
    (require_labels if require_labelled else require_videos)(source, spec)
    source = split_source_for_process(source, process_index, num_processes)
    placement = stage2_placement(device)
    loader = build_view_dataloader(
        source,
        recipe,
        batch_size=batch_size,
        num_workers=num_workers,
        seed=0,
        placement=placement,
        return_keys=True,
    )

    def batches():
        for batch in loader:
            yield placement.finish(batch, recipe)

    return batches()


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
    """Clip-averaged encoder features of every video of a labelled source, from :func:`evaluation_batches`,
    ordered by video key.

    In a distributed run each process encodes its share of the videos and every process returns all of them, in
    the order one process gives (the key order), so that what follows does not depend on the number of processes.
    """
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    batches = evaluation_batches(
        spec,
        recipe,
        split=split,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        label_names=label_names,
        process_index=rank(),
        num_processes=world_size(),
    )
    first = next(batches, None)  # a share can be empty (fewer videos than processes)
    local = (
        None if first is None else extract_features(encoder, itertools.chain([first], batches), device=device)
    )
    features = _gather_by_key(local)
    if features is None:
        raise ValueError(f"{spec} holds no decodable videos.")
    if (features.labels < 0).any():
        raise ValueError(f"{spec} has videos without labels: evaluation protocols need every video labelled.")
    return features


def _gather_by_key(local: VideoFeatures | None) -> VideoFeatures | None:
    """The videos of every process (each holds a disjoint share), on every process, ordered by video key."""
    parts = [local]
    if world_size() > 1:
        parts = [None] * world_size()
        dist.all_gather_object(parts, local)
    parts = [part for part in parts if part is not None]
    if not parts:
        return None
    ids = [video_id for part in parts for video_id in part.video_ids]
    if len(set(ids)) != len(ids):
        raise ValueError("Two videos share a key: evaluation orders and matches videos by key.")
    order = sorted(range(len(ids)), key=ids.__getitem__)
    features = torch.cat([part.features for part in parts])[order]
    labels = torch.cat([part.labels for part in parts])[order]
    return VideoFeatures(features, labels, [ids[i] for i in order])


def require_videos(source, spec: str) -> dict:
    """Fail early, with the source's name, when ``source`` is empty; return its first example."""
    first = next(iter(source), None)
    if first is None:
        raise UsageError(f"{spec} holds no videos.")
    return first


def require_labels(source, spec: str) -> None:
    """Fail early, with the source's name, when ``source`` is empty or has no labels (from its first video)."""
    first = require_videos(source, spec)
    if source_label_names(source) is None and first["label"] < 0:
        raise UsageError(
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
    num_clips: int | None = None,
    spatial_crops: str | None = None,
    processor: VideoSSLVideoProcessor | None = None,
    batch_size: int = 8,
    num_workers: int = 2,
    train_split: str = "train",
    test_split: str = "validation",
    **protocol_kwargs,
) -> dict[str, float]:
    """Features of both sources (clip-averaged), then the protocols: ``{"knn/top1": ..., "retrieval/R@1": ...}``.

    The views are ``processor``'s (a checkpoint's saved video processor), else :func:`evaluation_recipe`'s. In a
    distributed run every process extracts the features of its share of the videos (:func:`video_features`),
    the main process runs the protocols and every process returns their results.
    """
    if processor is not None:
        recipe = EvalViews.from_processor(processor)
    else:
        recipe = evaluation_recipe(num_frames, image_size, num_clips, spatial_crops)
    kwargs = dict(recipe=recipe, batch_size=batch_size, num_workers=num_workers)
    train = video_features(encoder, train_spec, split=train_split, **kwargs)
    # each source numbers its own classes: the test ids follow the training names
    names = source_label_names(load_video_source(train_spec, split=train_split))
    test = video_features(encoder, test_spec, split=test_split, label_names=names, **kwargs)
    results = evaluate_features(train, test, protocols=protocols, **protocol_kwargs) if rank() == 0 else None
    if world_size() > 1:  # one computation, the same numbers everywhere
        shared = [results]
        dist.broadcast_object_list(shared, src=0)
        results = shared[0]
    return results


__all__ = [
    "evaluate_encoder",
    "evaluation_batches",
    "evaluation_processor",
    "evaluation_recipe",
    "format_results_table",
    "require_labels",
    "require_videos",
    "video_features",
]
