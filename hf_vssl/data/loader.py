"""DataLoader plumbing for the view engine: decode + stage 1 in workers, and where stage 2 runs.

Where stage 2 (rendering the views) runs is decided in one place, :func:`stage2_placement`, from the device the
batches are for: a CPU run renders in the DataLoader workers, a GPU run on the GPU. The loader and the training or
evaluation loop both read that decision. Typical training loop (every method, nothing method-specific)::

    recipe = MLFOViews()
    placement = stage2_placement("cuda")           # logged once: stage 2 runs on cuda
    loader = build_view_dataloader(source, recipe, batch_size=64, num_workers=8, seed=0, placement=placement)
    for epoch in range(num_epochs):
        loader.dataset.set_epoch(epoch)
        for batch in loader:                       # stage-1 batch: uint8 canvases + parameters (tensors only)
            skipped += int(batch.pop("num_skipped").sum())  # bad videos met since the previous sample
            views = placement.finish(batch, recipe)  # on the GPU: pixel_values [B, V, T, C, H, W]
            ...

With a CPU placement the workers run stage 2 on each batch they collate, the batches arrive holding
``pixel_values``, and :meth:`Stage2Placement.finish` only moves them. On CPU, ``THP_MEM_ALLOC_ENABLE=1`` in the
environment (PyTorch backs large tensors with huge pages) can save the page faults of every fresh batch-sized
buffer; whether it does depends on the kernel's huge-page settings, so measure (``benchmarks/data_throughput.py``
sets it).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..video_decoding import VideoDecodeError, VideoReader
from .batches import batch_to_device, collate_views, empty_batch
from .inputs import SkippedVideos, fetch_remote_video
from .plans import ViewRecipe, sample_views
from .rendering import STAGE1_ONLY_KEYS, apply_views
from .sampling import sample_rng

logger = logging.getLogger(__name__)

__all__ = [
    "Stage2Placement",
    "ViewCollator",
    "VideoViewDataset",
    "build_view_dataloader",
    "collate_views",
    "skipped_in_batch",
    "stage2_placement",
]


@dataclass(frozen=True)
class Stage2Placement:
    """Where stage 2 runs for one loader's batches, as :func:`stage2_placement` decided it.

    Both ends read it: :func:`build_view_dataloader` builds the workers' collate function and memory pinning from
    it, and the training or evaluation loop turns each batch it receives into model input with :meth:`finish`.

    Attributes:
        in_workers: the DataLoader workers render, and batches arrive holding ``pixel_values``; otherwise they
            arrive as stage-1 batches (decoded canvases and view parameters) and :meth:`finish` renders them.
        device: where the batches are for; ``None`` leaves them where the loader delivers them (the CPU).
    """

    in_workers: bool
    device: torch.device | None = None

    @property
    def pin_memory(self) -> bool:
        """Pinned batches let the copy to a CUDA device (``non_blocking``) overlap the step before."""
        return self.device is not None and self.device.type == "cuda"

    def finish(self, batch: dict[str, Any], recipe: ViewRecipe) -> dict[str, Any]:
        """Model input from one loader batch, on :attr:`device`: the workers' rendering moved there, or a
        stage-1 batch rendered there now (:func:`~hf_vssl.data.rendering.apply_views`)."""
        if self.in_workers:
            return batch_to_device(batch, self.device)
        return apply_views(batch, recipe, device=self.device)

    def __str__(self) -> str:
        if self.in_workers:
            return "in the DataLoader workers" + (
                f", batches then moved to {self.device}" if self.device else ""
            )
        return (
            f"on {self.device}" if self.device is not None else "in the main process, on the batch's device"
        )


def stage2_placement(
    device: torch.device | str | None = None, *, in_workers: bool | None = None
) -> Stage2Placement:
    """Decide where stage 2 (crop, resize, flip, colour) runs for batches headed to ``device``.

    This is the one place the decision is made. A CPU run renders in the DataLoader workers: the main process is
    busy with the model, and the workers write the pixels straight into the shared-memory batch. A GPU run
    renders on the GPU, where stage 2 is a few batched kernels, and its workers only decode. Without a
    ``device`` (tools, tests) batches stay stage-1 and are rendered where :meth:`Stage2Placement.finish` is
    called. ``in_workers`` overrides the choice (the throughput benchmark measures both). Each distinct
    decision is logged once per process.
    """
    device = torch.device(device) if device is not None else None
    if in_workers is None:
        in_workers = device is not None and device.type == "cpu"
    placement = Stage2Placement(bool(in_workers), device)
    _log_placement(placement)
    return placement


@functools.cache
def _log_placement(placement: Stage2Placement) -> None:
    logger.info("View stage 2 (crop, resize, flip, colour) runs %s.", placement)


class VideoViewDataset(IterableDataset):
    """Streams stage-1 view samples (:func:`~hf_vssl.data.plans.sample_views`, plus ``labels``) from a source.

    Args:
        source: an iterable of examples ``{"video": ..., "label": ..., "key": ...}`` where ``video`` is anything
            :class:`~hf_vssl.video_decoding.VideoReader` opens (path, bytes, ``{"bytes", "path"}``); typically a
            streaming ``datasets.IterableDataset`` from ``load_video_source``. Plain paths are accepted too.
            A ``datasets.IterableDataset`` splits its shards over DataLoader workers itself; any other iterable
            is split example by example (round robin).
        recipe: the view recipe.
        seed: base seed; a sample's randomness is a function of ``(seed, epoch, key)`` only.
        return_keys: add each sample's ``key`` (a string; batches then carry a ``keys`` list, which accelerate's
            batch dispatcher does not accept).
        video_column, label_column, key_column: example fields to read.

    Every yielded sample carries ``num_skipped``: the number of bad videos (undecodable, empty, no video
    stream, truncated, too short for the recipe) this worker skipped since its previous sample (skips after a
    worker's last sample are added to that sample); sum it over batches to count skips across workers
    (``self.skipped`` only sees the skips of the process it lives in). Each skip is logged once with the file's
    name. A worker that reads examples but can use none of them raises ``RuntimeError`` instead of yielding an
    empty epoch, and so does a pass over an empty source in the main process.
    """

    def __init__(
        self,
        source: Iterable[Any],
        recipe: ViewRecipe,
        seed: int = 0,
        *,
        return_keys: bool = False,
        video_column: str = "video",
        label_column: str = "label",
        key_column: str = "key",
    ):
        super().__init__()
        if not isinstance(recipe, ViewRecipe):
            raise TypeError(f"recipe must be a ViewRecipe, got {type(recipe).__name__}")
        self.source = source
        self.recipe = recipe
        self.seed = int(seed)
        self.epoch = 0
        self.return_keys = return_keys
        self.video_column = video_column
        self.label_column = label_column
        self.key_column = key_column
        self.skipped = SkippedVideos(logger)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's randomness (and the source's shuffling, when it has ``set_epoch``).

        DataLoader workers copy the dataset when they start, so call this before iterating the loader (with
        ``persistent_workers=True`` the workers would keep the epoch they started with).
        """
        self.epoch = int(epoch)
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(self.epoch)

    # ---------------------------------------------------------------------------------------------------------
    def _worker_examples(self) -> Iterator[Any]:
        worker = get_worker_info()
        if worker is None or worker.num_workers == 1 or _splits_itself(self.source):
            yield from self.source
            return
        for position, example in enumerate(self.source):
            if position % worker.num_workers == worker.id:
                yield example

    def _read_example(self, example: Any, position: int) -> tuple[Any, Any, str, str]:
        """``(video, label, key, name)`` of an example; ``name`` is what warnings and errors show."""
        if isinstance(example, dict):
            if self.video_column not in example:
                raise KeyError(
                    f"source example has no '{self.video_column}' column (columns: {sorted(example)}); "
                    "set video_column="
                )
            video, label = example[self.video_column], example.get(self.label_column)
            key = example.get(self.key_column) or example.get("__key__")
        else:
            video, label, key = example, None, None
        path = (
            video.get("path")
            if isinstance(video, dict)
            else video
            if isinstance(video, (str, os.PathLike))
            else None
        )
        key = (
            str(key) if key is not None else (os.fspath(path) if path is not None else f"example-{position}")
        )
        name = os.fspath(path) if path is not None else key
        return video, label, key, name

    def _make_sample(self, video: Any, label: Any, key: str, name: str) -> dict[str, Any]:
        rng = sample_rng(self.seed, self.epoch, key)
        with VideoReader(fetch_remote_video(video, name), name=name) as reader:
            sample = sample_views(reader, self.recipe, rng)
        sample["labels"] = np.array(-1 if label is None else int(label), dtype=np.int64)
        if self.return_keys:
            sample["key"] = key
        return sample

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        seen, pending_skips, held = 0, 0, None
        for position, example in enumerate(self._worker_examples()):
            seen += 1
            video, label, key, name = self._read_example(example, position)
            try:
                sample = self._make_sample(video, label, key, name)
            except VideoDecodeError as err:
                self.skipped.record(err.source, err.reason)
                pending_skips += 1
                continue
            sample["num_skipped"] = np.array(pending_skips, dtype=np.int64)
            pending_skips = 0
            # Hold one sample back so that skips after the last usable video still reach the batch.
            if held is not None:
                yield held
            held = sample
        if held is not None:
            held["num_skipped"] = held["num_skipped"] + pending_skips
            yield held
        elif seen:
            where = f" (DataLoader worker {worker.id} of {worker.num_workers})" if worker is not None else ""
            raise RuntimeError(
                f"None of the {seen} videos read in this pass could be used{where}: every one was skipped "
                f"({dict(self.skipped.by_reason)}). Check the data source and the recipe's requirements "
                f"({type(self.recipe).__name__} needs >= {self.recipe.min_num_frames} frames)."
            )
        elif worker is None:
            raise RuntimeError("The video source is empty: a pass over it yielded no examples.")


class ViewCollator:
    """The DataLoader ``collate_fn``: stack stage-1 samples, and with a ``recipe`` also render them (stage 2).

    Rendering in the collate function runs stage 2 once per batch inside the worker and writes
    ``pixel_values`` straight into the shared-memory batch, so the decoded canvases never leave the worker and
    the rendered batch is not copied again on its way to the main process.
    """

    def __init__(self, recipe: ViewRecipe | None = None):
        self.recipe = recipe

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        if self.recipe is None:
            return collate_views(samples)
        stage1 = collate_views(samples, shared=False)
        B, V, T = stage1["frame_slots"].shape
        layout = {
            name: (tuple(value.shape), value.dtype)
            for name, value in stage1.items()
            if isinstance(value, torch.Tensor) and name not in STAGE1_ONLY_KEYS
        }
        layout["pixel_values"] = ((B, V, T, 3, *self.recipe.output_size), torch.float32)
        batch = empty_batch(layout, shared=get_worker_info() is not None)
        rendered = apply_views(stage1, self.recipe, out=batch["pixel_values"])
        for name, value in rendered.items():
            if name == "pixel_values":
                continue  # rendered in place
            if name in batch:
                batch[name].copy_(value)
            else:
                batch[name] = value  # keys
        return batch


def _splits_itself(source: Any) -> bool:
    """True for sources that hand each DataLoader worker its own part (``datasets.IterableDataset``)."""
    datasets = sys.modules.get("datasets")  # never import it here: a fresh worker would pay seconds for it
    return datasets is not None and isinstance(source, datasets.IterableDataset)


def build_view_dataloader(
    source: Iterable[Any] | VideoViewDataset,
    recipe: ViewRecipe,
    batch_size: int,
    num_workers: int = 2,
    *,
    seed: int = 0,
    placement: Stage2Placement | None = None,
    return_keys: bool = False,
    drop_last: bool = False,
    prefetch_factor: int | None = None,
    persistent_workers: bool = False,
    multiprocessing_context: Any = None,
    **dataset_kwargs: Any,
) -> DataLoader:
    """A DataLoader over :class:`VideoViewDataset` with :func:`collate_views`.

    Batches hold only tensors (plus ``keys`` with ``return_keys``), so accelerate can dispatch them. The
    dataset is ``loader.dataset`` (call its ``set_epoch`` every epoch). Pass each batch through
    ``placement.finish(batch, recipe)`` to get the model's input.

    Args:
        placement: where stage 2 runs, from :func:`stage2_placement`: the workers render when it says so, and
            batches for a CUDA device are pinned. Default ``stage2_placement()``: stage-1 batches, not pinned.
    """
    if placement is None:
        placement = stage2_placement()
    if isinstance(source, VideoViewDataset):
        dataset = source
    else:
        dataset = VideoViewDataset(source, recipe, seed, return_keys=return_keys, **dataset_kwargs)
    extra = {}
    if num_workers > 0:
        extra["prefetch_factor"] = prefetch_factor or 2
        extra["persistent_workers"] = persistent_workers
        if multiprocessing_context is not None:
            extra["multiprocessing_context"] = multiprocessing_context
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=ViewCollator(recipe if placement.in_workers else None),
        drop_last=drop_last,
        pin_memory=placement.pin_memory,
        **extra,
    )


def skipped_in_batch(batch: dict[str, Any]) -> int:
    """Bad videos the workers skipped while producing ``batch`` (sum of ``num_skipped``)."""
    value = batch.get("num_skipped")
    return int(value.sum()) if isinstance(value, torch.Tensor) else 0
