"""Batch transport: stage-1 (or rendered) samples stacked into batches, and sent from DataLoader workers in one block.

:func:`collate_views` stacks samples (padding canvases of different sizes); inside a worker it stacks straight
into one shared-memory block, a :class:`SharedBatch`, which crosses to the main process with a single
file-descriptor handover.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["SharedBatch", "batch_to_device", "collate_views", "empty_batch"]


def collate_views(samples: list[dict[str, Any]], shared: bool | None = None) -> dict[str, Any]:
    """Stack stage-1 (or stage-2) samples into a batch of tensors.

    ``frames`` of different canvas sizes are zero-padded at the bottom/right to the largest one (crops never
    reach the padding). A ``key`` entry (strings) becomes the list ``keys``; everything else is stacked.

    Args:
        shared: stack straight into one shared-memory block (a :class:`SharedBatch`), so that sending the batch
            from a DataLoader worker costs no further copy. Default: when running inside a worker (as
            ``default_collate``).
    """
    if not samples:
        raise ValueError("collate_views needs at least one sample")
    if shared is None:
        shared = torch.utils.data.get_worker_info() is not None
    stacks: dict[str, list[torch.Tensor]] = {}
    layout: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    keys = None
    for name in samples[0]:
        values = [sample[name] for sample in samples]
        if name == "key":
            keys = list(values)
            continue
        tensors = [v if isinstance(v, torch.Tensor) else torch.from_numpy(np.asarray(v)) for v in values]
        shape = tuple(max(sizes) for sizes in zip(*(t.shape for t in tensors)))
        if any(t.shape != shape for t in tensors) and name != "frames":
            raise ValueError(
                f"cannot batch '{name}': samples have shapes {[tuple(t.shape) for t in tensors]}"
            )
        stacks[name] = tensors
        layout[name] = ((len(tensors), *shape), tensors[0].dtype)
    batch = empty_batch(layout, shared)
    for name, tensors in stacks.items():
        out = batch[name]
        if any(t.shape != out.shape[1:] for t in tensors):
            out.zero_()
        for i, t in enumerate(tensors):
            out[(i, *(slice(0, n) for n in t.shape))] = t
    if keys is not None:
        batch["keys"] = keys
    return batch


def empty_batch(
    layout: dict[str, tuple[tuple[int, ...], torch.dtype]], shared: bool = False
) -> dict[str, Any]:
    """Uninitialised CPU tensors for ``layout`` (``{name: (shape, dtype)}``), one ``torch.empty`` each.

    With ``shared`` they are instead views of one shared-memory block, returned as a :class:`SharedBatch`.
    """
    if not shared:
        return {name: torch.empty(shape, dtype=dtype) for name, (shape, dtype) in layout.items()}
    offsets, size = {}, 0
    for name, (shape, dtype) in layout.items():
        size = -(-size // _BLOCK_ALIGNMENT) * _BLOCK_ALIGNMENT
        offsets[name] = size
        size += math.prod(shape) * dtype.itemsize
    storage = torch.UntypedStorage._new_shared(max(size, 1))
    batch = SharedBatch()
    batch.block = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (storage.nbytes(),))
    for name, (shape, dtype) in layout.items():
        batch[name] = torch.empty(0, dtype=dtype).set_(storage, offsets[name] // dtype.itemsize, shape)
    return batch


# cache-line alignment of the tensors in a SharedBatch block (also a multiple of every element size)
_BLOCK_ALIGNMENT = 64


class SharedBatch(dict):
    """A batch (a ``dict``) whose tensors are views of one shared-memory ``block`` (``uint8``, all of it).

    One block per batch lets a DataLoader worker send the batch with a single file-descriptor handover (pickling
    sends each storage once) instead of one per tensor, each over its own authenticated socket connection: for a
    stage-1 batch of about twenty tensors the main process receives it in less than half the time
    (``benchmarks/batch_transfer.py``). As plain views, though, every small entry would keep the whole block
    alive: keeping each batch's labels, as feature extraction does, would keep each batch's pixels. A
    ``SharedBatch`` therefore unpickles as a plain ``dict`` in which only the largest tensor stays a view of the
    block and the small ones are copies. Entries that are not views of the block (added later, or not tensors)
    are pickled as usual.
    """

    block: torch.Tensor | None = None

    def __copy__(self) -> SharedBatch:
        clone = SharedBatch(self)
        clone.block = self.block
        return clone

    def __reduce__(self):
        if self.block is None:
            return dict, (dict(self),)
        address = self.block.untyped_storage().data_ptr()
        entries = []
        for name, value in self.items():
            if isinstance(value, torch.Tensor) and value.untyped_storage().data_ptr() == address:
                spec = (value.dtype, tuple(value.shape), value.stride(), value.storage_offset())
                entries.append((name, spec, None))
            else:
                entries.append((name, None, value))
        return _rebuild_shared_batch, (self.block, entries)


def _rebuild_shared_batch(block: torch.Tensor, entries: list[tuple[str, Any, Any]]) -> dict[str, Any]:
    storage = block.untyped_storage()
    views = {
        name: torch.empty(0, dtype=spec[0]).set_(storage, spec[3], spec[1], spec[2])
        for name, spec, _ in entries
        if spec is not None
    }
    largest = max(views, key=lambda name: views[name].nbytes, default=None)
    return {
        name: value if spec is None else views[name] if name == largest else views[name].clone()
        for name, spec, value in entries
    }


def batch_to_device(batch: dict[str, Any], device: torch.device | str | None) -> dict[str, Any]:
    """``batch`` with its tensors on ``device`` (asynchronously when they are pinned); ``None`` leaves it as is."""
    if device is None:
        return batch
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
