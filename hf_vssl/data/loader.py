"""DataLoader plumbing for the view engine: decode + stage 1 in workers, stage 2 wherever the batch goes.

Typical training loop (every method, nothing method-specific)::

    recipe = MLFOViews()
    loader = build_view_dataloader(source, recipe, batch_size=64, num_workers=8, seed=0, device="cuda")
    for epoch in range(num_epochs):
        loader.dataset.set_epoch(epoch)
        for batch in loader:                       # stage-1 batch: uint8 canvases + parameters (tensors only)
            batch = apply_views(batch, recipe, device="cuda")   # stage 2 on the GPU: pixel_values [B, V, T, C, H, W]
            skipped += int(batch["num_skipped"].sum())      # bad videos met since the previous sample
            ...

With ``device="cpu"`` (or ``augment_in_workers=True``) the workers run stage 2 on each batch they collate, the
batches already hold ``pixel_values``, and :func:`apply_views` returns them unchanged. On CPU,
``THP_MEM_ALLOC_ENABLE=1`` in the environment (PyTorch backs large tensors with huge pages) can save the page
faults of every fresh batch-sized buffer; whether it does depends on the kernel's huge-page settings, so measure
(``benchmarks/data_throughput.py`` sets it).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..video_decoding import SkippedVideos, VideoDecodeError, VideoReader
from .batches import collate_views, empty_batch
from .plans import ViewRecipe, sample_views
from .rendering import STAGE1_ONLY_KEYS, apply_views
from .sampling import sample_rng

logger = logging.getLogger(__name__)

__all__ = ["ViewCollator", "VideoViewDataset", "build_view_dataloader", "collate_views", "skipped_in_batch"]


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
        with VideoReader(video, name=name) as reader:
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
    device: torch.device | str | None = None,
    augment_in_workers: bool | None = None,
    return_keys: bool = False,
    drop_last: bool = False,
    pin_memory: bool | None = None,
    prefetch_factor: int | None = None,
    persistent_workers: bool = False,
    multiprocessing_context: Any = None,
    **dataset_kwargs: Any,
) -> DataLoader:
    """A DataLoader over :class:`VideoViewDataset` with :func:`collate_views`.

    Batches hold only tensors (plus ``keys`` with ``return_keys``), so accelerate can dispatch them. The
    dataset is ``loader.dataset`` (call its ``set_epoch`` every epoch). Without ``augment_in_workers`` apply
    :func:`~hf_vssl.data.rendering.apply_views` to each batch on the training device.

    Args:
        device: the device the batches are for. It sets the defaults of the next two arguments: a CPU
            renders the views in the workers (the main process is busy with the model), a CUDA device gets
            pinned batches (so ``.to(device, non_blocking=True)`` overlaps the copy) and renders on the GPU.
        augment_in_workers: run stage 2 in the workers (default: ``device`` is a CPU).
        pin_memory: pin the batches (default: ``device`` is a CUDA device).
    """
    device_type = torch.device(device).type if device is not None else None
    if augment_in_workers is None:
        augment_in_workers = device_type == "cpu"
    if pin_memory is None:
        pin_memory = device_type == "cuda"
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
        collate_fn=ViewCollator(recipe if augment_in_workers else None),
        drop_last=drop_last,
        pin_memory=pin_memory,
        **extra,
    )


def skipped_in_batch(batch: dict[str, Any]) -> int:
    """Bad videos the workers skipped while producing ``batch`` (sum of ``num_skipped``)."""
    value = batch.get("num_skipped")
    return int(value.sum()) if isinstance(value, torch.Tensor) else 0
