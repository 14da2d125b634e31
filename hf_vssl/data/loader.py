"""DataLoader plumbing for the view engine: decode + stage 1 in workers, and where stage 2 runs.

Where stage 2 (rendering the views) runs is decided in one place, :func:`stage2_placement`, from the device the
batches are for: a CPU run renders in the DataLoader workers, a GPU run on the GPU. The loader and the training or
evaluation loop both read that decision. Typical training loop (every method, nothing method-specific)::

    recipe = MLFOViews()
    placement = stage2_placement("cuda")           # logged once: stage 2 runs on cuda
    loader = build_view_dataloader(source, recipe, batch_size=64, num_workers=8, seed=0, placement=placement,
                                   drop_last=True, persistent_workers=True)
    for epoch in range(num_epochs):
        loader.dataset.set_epoch(epoch)            # reaches persistent workers too (shared memory)
        batches = iter(loader)
        for batch in batches:                      # stage-1 batch: uint8 canvases + parameters (tensors only)
            views = placement.finish(batch, recipe)  # on the GPU: pixel_values [B, V, T, C, H, W]
            ...
        bad = set(batches.skipped)                 # bad videos met in this pass, from every worker

Every pass delivers all of the process's usable videos but at most one partial batch, whatever the number of
workers: each worker batches its own share (a bad video's place is taken by the worker's next good one) and hands
over its last, short batch too; the main process passes full batches on as they come and joins the short ones into
full batches (:class:`ViewBatches`). Workers send bad videos' names with their batches; the main process warns
once per file for the loader's lifetime and keeps them per pass, and decides that nothing decodes only from all
workers together.

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
    "ViewBatches",
    "ViewCollator",
    "ViewDataLoader",
    "VideoViewDataset",
    "build_view_dataloader",
    "collate_views",
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
        return_keys: add each sample's ``key`` (a string; batches then carry a ``keys`` list).
        batch_size: yield worker batches instead of samples (what :func:`build_view_dataloader` sets): lists of
            ``batch_size`` samples, a worker's last one shorter, each with the bad videos met since the previous
            one in ``.skipped``; a worker whose share holds only bad videos yields one empty list with its skips.
        video_column, label_column, key_column: example fields to read.

    Iterated directly (no ``batch_size``), every sample carries ``num_skipped``: the number of bad videos
    (undecodable, empty, no video stream, truncated, too short for the recipe) skipped since the previous sample
    (skips after the last sample are added to it), each logged once with the file's name (``self.skipped``);
    a pass in the main process in which nothing can be used raises ``RuntimeError``. Inside DataLoader workers
    nothing is raised for bad videos: only the loader, which sees every worker, decides that nothing decodes.
    """

    def __init__(
        self,
        source: Iterable[Any],
        recipe: ViewRecipe,
        seed: int = 0,
        *,
        return_keys: bool = False,
        batch_size: int | None = None,
        video_column: str = "video",
        label_column: str = "label",
        key_column: str = "key",
    ):
        super().__init__()
        if not isinstance(recipe, ViewRecipe):
            raise TypeError(f"recipe must be a ViewRecipe, got {type(recipe).__name__}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.source = source
        self.recipe = recipe
        self.seed = int(seed)
        # In shared memory, so that `set_epoch` also reaches persistent DataLoader workers, which keep the copy
        # of the dataset they started with (as `datasets.IterableDataset` does with its own epoch).
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self.return_keys = return_keys
        self.batch_size = batch_size
        self.video_column = video_column
        self.label_column = label_column
        self.key_column = key_column
        self.skipped = SkippedVideos(logger)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's randomness (and the source's shuffling, when it has ``set_epoch``).

        Call it before iterating the loader; running and persistent workers read it when their next pass starts.
        """
        self._epoch.fill_(int(epoch))
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(int(epoch))

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

    def _make_sample(self, video: Any, label: Any, key: str, name: str, epoch: int) -> dict[str, Any]:
        rng = sample_rng(self.seed, epoch, key)
        with VideoReader(fetch_remote_video(video, name), name=name) as reader:
            sample = sample_views(reader, self.recipe, rng)
        sample["labels"] = np.array(-1 if label is None else int(label), dtype=np.int64)
        if self.return_keys:
            sample["key"] = key
        return sample

    def _samples_and_skips(self) -> Iterator[dict[str, Any] | VideoDecodeError]:
        """This pass's usable samples, and a ``VideoDecodeError`` in place of each bad video."""
        epoch = self.epoch  # read once: a pass never mixes two epochs
        for position, example in enumerate(self._worker_examples()):
            video, label, key, name = self._read_example(example, position)
            try:
                yield self._make_sample(video, label, key, name, epoch)
            except VideoDecodeError as err:
                yield err

    def __iter__(self) -> Iterator[Any]:
        if self.batch_size is not None:
            return self._worker_batches(self.batch_size)
        return self._samples()

    def _worker_batches(self, batch_size: int) -> Iterator[WorkerBatch]:
        batch = WorkerBatch()
        for item in self._samples_and_skips():
            if isinstance(item, VideoDecodeError):
                batch.skipped.append((item.source, item.reason, item.detail))
                continue
            batch.append(item)
            if len(batch) == batch_size:
                yield batch
                batch = WorkerBatch()
        if batch or batch.skipped:  # the short last batch, or only the skips of a share with nothing usable
            yield batch

    def _samples(self) -> Iterator[dict[str, Any]]:
        seen, pending_skips, held = 0, 0, None
        for item in self._samples_and_skips():
            seen += 1
            if isinstance(item, VideoDecodeError):
                self.skipped.record(item)
                pending_skips += 1
                continue
            item["num_skipped"] = np.array(pending_skips, dtype=np.int64)
            pending_skips = 0
            # Hold one sample back so that skips after the last usable video still reach a sample.
            if held is not None:
                yield held
            held = item
        if held is not None:
            held["num_skipped"] = held["num_skipped"] + pending_skips
            yield held
        elif get_worker_info() is None:  # a worker's share may be bad or empty while others are fine
            _raise_nothing_usable(seen, self.skipped.by_reason, self.recipe)


class WorkerBatch(list):
    """One worker batch before collation: its samples, and ``skipped``, the ``(name, reason, detail)`` of each
    bad video met since the worker's previous batch."""

    def __init__(self, samples: Iterable[dict[str, Any]] = ()):
        super().__init__(samples)
        self.skipped: list[tuple[str, str, str | None]] = []


def _raise_nothing_usable(seen: int, by_reason: dict[str, int], recipe: ViewRecipe) -> None:
    if not seen:
        raise RuntimeError("The video source is empty: a pass over it yielded no examples.")
    raise RuntimeError(
        f"None of the {seen} videos read in this pass could be used: every one was skipped "
        f"({dict(by_reason)}). Check the data source and the recipe's requirements "
        f"({type(recipe).__name__} needs >= {recipe.min_num_frames} frames)."
    )


class ViewCollator:
    """The DataLoader ``collate_fn``: stack stage-1 samples, and with a ``recipe`` also render them (stage 2).

    Rendering in the collate function runs stage 2 once per batch inside the worker and writes
    ``pixel_values`` straight into the shared-memory batch, so the decoded canvases never leave the worker and
    the rendered batch is not copied again on its way to the main process. A :class:`WorkerBatch` keeps its
    skips in the batch's ``skipped`` entry (a list); one without samples becomes ``{"skipped": [...]}``.
    """

    def __init__(self, recipe: ViewRecipe | None = None):
        self.recipe = recipe

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        skipped = getattr(samples, "skipped", None)
        if not samples and skipped is not None:
            return {"skipped": list(skipped)}
        batch = self._collate(samples)
        if skipped is not None:
            batch["skipped"] = list(skipped)
        return batch

    def _collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
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


class ViewDataLoader(DataLoader):
    """A DataLoader over a :class:`VideoViewDataset` whose passes (:class:`ViewBatches`) lose no video to the
    worker count: workers hand over their short last batches, which the main process joins into full ones.

    Build it with :func:`build_view_dataloader`. ``batch_size`` and ``drop_last`` are those of the batches it
    delivers (the underlying DataLoader moves whole worker batches); ``skipped`` warns once per bad video over
    the loader's lifetime (every pass and epoch) and counts skip events by reason.
    """

    def __init__(
        self,
        dataset: VideoViewDataset,
        *,
        drop_last: bool = False,
        require_usable: bool = True,
        **kwargs: Any,
    ):
        if dataset.batch_size is None:
            raise ValueError("the dataset of a ViewDataLoader yields worker batches: set its batch_size")
        super().__init__(dataset, batch_size=None, **kwargs)
        self.view_batch_size = dataset.batch_size
        self.drop_partial = drop_last
        self.require_usable = require_usable
        self.skipped = SkippedVideos(logger)

    def __iter__(self) -> ViewBatches:
        return ViewBatches(self, super().__iter__())


class ViewBatches:
    """One pass over a :class:`ViewDataLoader`: batches of exactly ``batch_size`` videos, but the last one.

    Full worker batches pass through untouched (no copy); short ones (each worker's last, of any size) are held
    and joined, in arrival order, into full batches. The DataLoader hands over worker batches in a fixed round
    robin, so the order of a pass depends only on the seed, the epoch and the number of workers. The remainder
    (fewer than ``batch_size`` videos) ends the pass as a partial batch, or is dropped with ``drop_last``.

    Attributes:
        skipped: names of the bad videos met in this pass, in the order met (from every worker).
        num_videos: usable videos received from the workers in this pass.
        num_dropped: videos of the dropped partial batch (``drop_last``), known once the pass has ended.
    """

    def __init__(self, loader: ViewDataLoader, batches: Iterator[dict[str, Any]]):
        self._loader = loader
        self._batches = batches
        self._held: list[dict[str, Any]] = []
        self._num_held = 0
        self._ended = False
        self.skipped: list[str] = []
        self.num_videos = 0
        self.num_dropped = 0

    def __iter__(self) -> ViewBatches:
        return self

    def __next__(self) -> dict[str, Any]:
        batch_size = self._loader.view_batch_size
        while self._num_held < batch_size:
            if self._ended:
                break
            batch = next(self._batches, None)
            if batch is None:
                self._end()
                break
            for name, reason, detail in batch.pop("skipped", ()):
                self.skipped.append(name)
                self._loader.skipped.record(VideoDecodeError(name, reason, detail))
            size = len(batch["labels"]) if "labels" in batch else 0
            self.num_videos += size
            if size == batch_size:
                return batch
            if size:
                self._held.append(batch)
                self._num_held += size
        if not self._num_held or (self._num_held < batch_size and self._loader.drop_partial):
            self.num_dropped, self._num_held, self._held = self._num_held, 0, []
            raise StopIteration
        return self._take(min(batch_size, self._num_held))

    def _end(self) -> None:
        self._ended = True
        if self._loader.require_usable and not self.num_videos:
            _raise_nothing_usable(
                len(self.skipped), self._loader.skipped.by_reason, self._loader.dataset.recipe
            )

    def _take(self, size: int) -> dict[str, Any]:
        joined = self._held[0] if len(self._held) == 1 else _join_batches(self._held)
        batch = {name: value[:size] for name, value in joined.items()}
        rest = {name: value[size:] for name, value in joined.items()}
        self._num_held -= size
        self._held = [rest] if self._num_held else []
        if self._loader.pin_memory and torch.cuda.is_available():
            batch = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        return batch


def _join_batches(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate batches along the batch dimension; canvases (``frames``) of different sizes are zero-padded
    at the bottom/right to the largest, as :func:`collate_views` pads them within a batch."""
    joined: dict[str, Any] = {}
    for name, first in batches[0].items():
        values = [batch[name] for batch in batches]
        if not isinstance(first, torch.Tensor):
            joined[name] = [item for value in values for item in value]
            continue
        shape = tuple(max(sizes) for sizes in zip(*(value.shape[1:] for value in values)))
        if all(value.shape[1:] == shape for value in values):
            joined[name] = torch.cat(values)
            continue
        if name != "frames":
            raise ValueError(f"cannot join '{name}': batches have shapes {[tuple(v.shape) for v in values]}")
        out = first.new_zeros((sum(len(value) for value in values), *shape))
        start = 0
        for value in values:
            out[(slice(start, start + len(value)), *(slice(0, n) for n in value.shape[1:]))] = value
            start += len(value)
        joined[name] = out
    return joined


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
    require_usable: bool = True,
    **dataset_kwargs: Any,
) -> ViewDataLoader:
    """A :class:`ViewDataLoader` over :class:`VideoViewDataset` with :class:`ViewCollator`.

    Batches hold only tensors (plus ``keys`` with ``return_keys``). The dataset is ``loader.dataset`` (call its
    ``set_epoch`` every epoch; with ``persistent_workers`` the workers live across epochs and still follow it).
    Pass each batch through ``placement.finish(batch, recipe)`` to get the model's input.

    Args:
        placement: where stage 2 runs, from :func:`stage2_placement`: the workers render when it says so, and
            batches for a CUDA device are pinned. Default ``stage2_placement()``: stage-1 batches, not pinned.
        drop_last: drop a pass's last partial batch (there is at most one per pass, whatever ``num_workers``).
        require_usable: a pass with no usable video raises ``RuntimeError`` (naming the skip reasons, or saying
            the source is empty). A multi-process training loop passes ``False`` and decides from every process.
    """
    if placement is None:
        placement = stage2_placement()
    if isinstance(source, VideoViewDataset):
        dataset = source
        dataset.batch_size = batch_size
    else:
        dataset = VideoViewDataset(
            source, recipe, seed, return_keys=return_keys, batch_size=batch_size, **dataset_kwargs
        )
    extra = {}
    if num_workers > 0:
        extra["prefetch_factor"] = prefetch_factor or 2
        extra["persistent_workers"] = persistent_workers
        if multiprocessing_context is not None:
            extra["multiprocessing_context"] = multiprocessing_context
    return ViewDataLoader(
        dataset,
        num_workers=num_workers,
        collate_fn=ViewCollator(recipe if placement.in_workers else None),
        drop_last=drop_last,
        require_usable=require_usable,
        pin_memory=placement.pin_memory,
        **extra,
    )
