"""Frozen-encoder feature extraction: one feature vector per video.

The feature of a released encoder is its stage-4 map, globally average pooled: ``model(pixel_values=...)
.pooler_output``. A video is usually seen through several clips (and crops); its feature is the mean over all
of them, whether they arrive together in one item (``pixel_values [B, N_clips, T, C, H, W]``) or as separate
items that share a video id, possibly in different batches.
"""

from collections.abc import Hashable, Iterable, Mapping
from typing import Any, NamedTuple

import torch
from torch import nn

from .metrics import UNLABELLED

# batch keys that identify the video an item belongs to, in order of preference
VIDEO_ID_KEYS = ("video_index", "video_id", "key", "keys")
LABEL_KEYS = ("label", "labels")


class VideoFeatures(NamedTuple):
    """Per-video features, in order of each video's first appearance.

    Attributes:
        features: ``[V, D]`` float32, on the CPU.
        labels: ``[V]`` int64 class ids, ``-1`` where the source has no label.
        video_ids: ``V`` ids (ints or strings) from the batches' ``video_index``/``video_id``/``key``, or the
            running item index when the batches carry none.
    """

    features: torch.Tensor
    labels: torch.Tensor
    video_ids: list[Hashable]


def pooled_output(output: Any) -> torch.Tensor:
    """The pooled feature ``[B, D]`` of a model output.

    Accepts anything with a ``pooler_output`` (attribute or key), e.g. transformers'
    ``BaseModelOutputWithPooling``, or a plain ``[B, D]`` tensor. Trailing singleton dims (``[B, D, 1, 1, 1]``)
    are flattened.
    """
    if isinstance(output, torch.Tensor):
        pooled = output
    elif isinstance(output, Mapping) and "pooler_output" in output:
        pooled = output["pooler_output"]
    elif getattr(output, "pooler_output", None) is not None:
        pooled = output.pooler_output
    else:
        raise TypeError(
            f"the model returned {type(output).__name__} without a `pooler_output`; feature extraction needs "
            "an encoder such as hf_vssl's XModel that returns the pooled stage-4 feature as `pooler_output`."
        )
    if pooled.ndim < 2:
        raise ValueError(f"pooler_output must be [batch, dim], got shape {tuple(pooled.shape)}.")
    return pooled.flatten(1)


def encode_clips(
    model: nn.Module, pixel_values: torch.Tensor, clips_per_forward: int | None = None
) -> torch.Tensor:
    """Encode every clip of every item and return the per-clip features.

    Args:
        model: encoder returning `pooled_output`-compatible outputs for ``pixel_values [B, T, C, H, W]``.
        pixel_values: ``[B, N_clips, T, C, H, W]`` or ``[B, T, C, H, W]`` (one clip per item).
        clips_per_forward: largest number of clips per forward pass; ``None`` sends all ``B * N_clips`` at once.

    Returns:
        ``[B, N_clips, D]`` float32 features (``N_clips = 1`` for 5-D input).
    """
    if pixel_values.ndim == 5:
        pixel_values = pixel_values[:, None]
    if pixel_values.ndim != 6:
        raise ValueError(
            "pixel_values must be [batch, clips, frames, channels, height, width] or "
            f"[batch, frames, channels, height, width], got shape {tuple(pixel_values.shape)}."
        )
    batch_size, num_clips = pixel_values.shape[:2]
    clips = pixel_values.flatten(0, 1)  # [B * N, T, C, H, W]: all clips of the batch go through together
    chunk = clips.shape[0] if clips_per_forward is None else clips_per_forward
    if chunk < 1:
        raise ValueError(f"clips_per_forward must be >= 1 or None, got {clips_per_forward}.")
    features = [pooled_output(model(pixel_values=part)).float() for part in clips.split(chunk)]
    return torch.cat(features).reshape(batch_size, num_clips, -1)


def aggregate_by_video(
    item_features: torch.Tensor, clip_counts: torch.Tensor, labels: torch.Tensor, item_ids: list[Hashable]
) -> VideoFeatures:
    """Average item features over the items of each video, weighting each item by its number of clips.

    Args:
        item_features: ``[M, D]`` per-item feature, already the mean over the item's clips.
        clip_counts: ``[M]`` number of clips behind each item feature.
        labels: ``[M]`` int64 label of each item (``-1`` unlabelled).
        item_ids: ``M`` video ids; items with equal ids belong to the same video.

    Returns:
        `VideoFeatures` with videos in order of first appearance; every video's feature is the mean over all
        of its clips.

    Raises:
        ValueError: items of one video carry different labels.
    """
    index_of: dict[Hashable, int] = {}
    video_index = torch.tensor([index_of.setdefault(i, len(index_of)) for i in item_ids], dtype=torch.long)
    num_videos = len(index_of)
    weights = clip_counts.to(item_features.dtype)
    sums = torch.zeros(num_videos, item_features.shape[1], dtype=item_features.dtype)
    sums.index_add_(0, video_index, item_features * weights[:, None])
    totals = torch.zeros(num_videos, dtype=item_features.dtype).index_add_(0, video_index, weights)
    video_labels = torch.full((num_videos,), UNLABELLED, dtype=torch.long)
    video_labels[video_index] = labels
    conflicting = (video_labels[video_index] != labels).nonzero()
    if conflicting.numel():
        item = int(conflicting[0])
        raise ValueError(
            f"video {item_ids[item]!r} has clips with different labels "
            f"({int(labels[item])} and {int(video_labels[video_index[item]])}); check the video ids of the source."
        )
    return VideoFeatures(sums / totals[:, None], video_labels, list(index_of))


def _batch_labels(batch: Mapping, batch_size: int) -> torch.Tensor:
    for key in LABEL_KEYS:
        if key in batch and batch[key] is not None:
            labels = torch.as_tensor(batch[key]).reshape(-1)
            if labels.numel() != batch_size:
                raise ValueError(f"batch has {batch_size} items but {labels.numel()} entries in '{key}'.")
            if labels.is_floating_point():
                raise ValueError(f"batch '{key}' must hold integer class ids, got dtype {labels.dtype}.")
            return labels.long()
    return torch.full((batch_size,), UNLABELLED, dtype=torch.long)


def _batch_video_ids(batch: Mapping, batch_size: int) -> torch.Tensor | list[Hashable] | None:
    for key in VIDEO_ID_KEYS:
        if key in batch and batch[key] is not None:
            ids = batch[key]
            if isinstance(ids, torch.Tensor):
                ids = ids.reshape(-1)
            elif isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
                ids = [ids]
            else:
                ids = [i.item() if isinstance(i, torch.Tensor) else i for i in ids]
            if len(ids) != batch_size:
                raise ValueError(f"batch has {batch_size} items but {len(ids)} entries in '{key}'.")
            return ids
    return None


def _model_device_and_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.device, parameter.dtype
    return torch.device("cpu"), torch.float32


def extract_features(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    accelerator=None,
    clips_per_forward: int | None = None,
    progress: bool = False,
) -> VideoFeatures:
    """Extract one feature per video with a frozen encoder.

    Every clip goes through ``model(pixel_values=clip_batch).pooler_output`` (stage 4, global average pooled
    for hf_vssl's encoders); a video's feature is the mean over all its clips and crops. The model is put in
    eval mode for the extraction (BatchNorm with running statistics, no dropout) and its previous mode is
    restored afterwards. No gradients are recorded. Runs under ``torch.no_grad`` rather than
    ``torch.inference_mode`` so that the returned tensors can be used to train a probe.

    Args:
        model: the encoder (e.g. ``hf_vssl.MLFOModel``), possibly wrapped by ``accelerator.prepare``.
        batches: iterable of mappings (e.g. a ``DataLoader``) with
            - ``"pixel_values"``: ``[B, N_clips, T, C, H, W]`` or ``[B, T, C, H, W]``;
            - ``"label"`` (or ``"labels"``): ``[B]`` class ids, optional (missing or ``-1`` = unlabelled);
            - ``"video_index"``, ``"video_id"``, ``"key"`` or ``"keys"`` (first found): the video each item belongs to,
              optional; items sharing an id are averaged together, across batches. Without one, every item is
              its own video.
        device: where to run the model; defaults to ``accelerator.device`` or the model's parameters' device.
        dtype: dtype the pixels are cast to; defaults to the model's parameter dtype.
        accelerator: an ``accelerate.Accelerator``. When given, each process encodes its shard of ``batches``
            (a dataloader from ``accelerator.prepare``) and the results are gathered with
            ``gather_for_metrics``, which drops the samples duplicated to even out the last batch; every
            process returns the full result.
        clips_per_forward: largest number of clips per forward pass (bounds memory); ``None`` = whole batch.
        progress: show a tqdm progress bar (main process only).

    Returns:
        `VideoFeatures` ``(features [V, D], labels [V], video_ids)`` on the CPU, in float32.
    """
    default_device, default_dtype = _model_device_and_dtype(model)
    device = (
        torch.device(device)
        if device is not None
        else (accelerator.device if accelerator else default_device)
    )
    dtype = dtype or default_dtype
    show_progress = progress and (accelerator is None or accelerator.is_main_process)
    if show_progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="extracting features", unit="batch")

    item_features, clip_counts, item_labels, item_ids = [], [], [], []
    next_item = 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                if not isinstance(batch, Mapping) or "pixel_values" not in batch:
                    found = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
                    raise ValueError(f"each batch must be a mapping with 'pixel_values'; got {found}.")
                pixel_values = torch.as_tensor(batch["pixel_values"])
                batch_size = pixel_values.shape[0]
                clip_features = encode_clips(
                    model, pixel_values.to(device=device, dtype=dtype), clips_per_forward
                )
                features = clip_features.mean(dim=1)  # [B, D]
                counts = torch.full((batch_size,), clip_features.shape[1], dtype=torch.long, device=device)
                labels = _batch_labels(batch, batch_size).to(device)
                ids = _batch_video_ids(batch, batch_size)
                if accelerator is not None:
                    if isinstance(ids, torch.Tensor):
                        features, counts, labels, ids = accelerator.gather_for_metrics(
                            (features, counts, labels, ids.to(device))
                        )
                    else:
                        features, counts, labels = accelerator.gather_for_metrics((features, counts, labels))
                        if ids is not None:
                            ids = accelerator.gather_for_metrics(ids, use_gather_object=True)
                if ids is None:
                    ids = list(range(next_item, next_item + features.shape[0]))
                    next_item += features.shape[0]
                elif isinstance(ids, torch.Tensor):
                    ids = ids.tolist()
                item_features.append(features.cpu())
                clip_counts.append(counts.cpu())
                item_labels.append(labels.cpu())
                item_ids.extend(ids)
    finally:
        model.train(was_training)

    if not item_features:
        raise ValueError("no batches to extract features from: the data source is empty.")
    return aggregate_by_video(
        torch.cat(item_features), torch.cat(clip_counts), torch.cat(item_labels), item_ids
    )
