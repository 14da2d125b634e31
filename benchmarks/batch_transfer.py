"""Main-process cost of receiving a DataLoader worker's batch: one shared block against one storage per tensor.

Each configuration runs the same loader (stage-1 MLFO batches from synthetic h264 videos, 2 workers) behind a slow
consumer, so that every batch is already waiting when the main process asks for it; the time ``next()`` takes is
then the cost of getting the batch across. The reference gives every tensor its own shared storage, as
``default_collate`` does: torch then hands each storage's file descriptor over on its own connection. The other
rows stack every tensor into one block, sent either as a plain dict of views (the block crosses once: pickling
sends each storage once) or as the :class:`~hf_vssl.data.batches.SharedBatch` the loader uses (which also copies the
small entries out on arrival, so that they do not keep the block alive). Usage::

    python benchmarks/batch_transfer.py
    python benchmarks/batch_transfer.py --size 240x320 --batch-size 8
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from hf_vssl.data.batches import collate_views
from hf_vssl.data.loader import build_view_dataloader
from hf_vssl.data.recipes import MLFOViews

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_throughput import write_videos  # noqa: E402


def one_storage_per_tensor(samples):
    """The reference collate: every tensor in its own shared storage, as ``default_collate`` allocates them."""
    return {
        k: v.share_memory_() if torch.is_tensor(v) else v
        for k, v in collate_views(samples, shared=False).items()
    }


def one_block_as_dict(samples):
    """One shared block, sent as a plain dict of its views."""
    return dict(collate_views(samples, shared=True))


def receive_times(loader, consumer_seconds: float) -> list[float]:
    """Seconds each ``next()`` of one pass took while the workers were ahead of a consumer that works
    ``consumer_seconds`` per batch."""
    times = []
    iterator = iter(loader)
    time.sleep(1.0)  # every worker fills its prefetch queue
    while True:
        start = time.perf_counter()
        try:
            next(iterator)
        except StopIteration:
            return times
        times.append(time.perf_counter() - start)
        time.sleep(consumer_seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-videos", type=int, default=32)
    parser.add_argument("--size", default="128x170", help="HxW of the synthetic videos")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--passes", type=int, default=3, help="passes per configuration, interleaved")
    parser.add_argument("--consumer-seconds", type=float, default=0.25, help="simulated training step")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as folder:
        paths = write_videos(Path(folder), args.num_videos, 48, size, gop=16)
        common = dict(num_workers=args.num_workers, persistent_workers=True, prefetch_factor=4)
        collates = {
            "one storage per tensor (reference)": one_storage_per_tensor,
            "one block, as a plain dict": one_block_as_dict,
            "one block, as a SharedBatch (the loader's)": None,
        }
        loaders = {}
        for name, collate in collates.items():
            loaders[name] = build_view_dataloader(paths, MLFOViews(), args.batch_size, **common)
            if collate is not None:
                loaders[name].collate_fn = collate
        times = {name: [] for name in loaders}
        for _ in range(args.passes):  # interleaved, so that machine noise hits them alike
            for name, loader in loaders.items():
                times[name] += receive_times(loader, args.consumer_seconds)
        del loaders  # stops the workers before their videos are deleted
        print(
            f"# {args.num_videos} h264 videos {size[0]}x{size[1]}, MLFO stage-1 batches of {args.batch_size}, "
            f"{args.num_workers} workers, {args.passes} passes\n"
        )
        print("| batch sent as | main-process ms to receive a waiting batch (median) | ratio to reference |")
        print("|---|---:|---:|")
        reference = statistics.median(times["one storage per tensor (reference)"])
        for name, values in times.items():
            median = statistics.median(values)
            print(f"| {name} | {1e3 * median:.2f} | {median / reference:.2f} |")
        print(
            f"\ncommand: python benchmarks/batch_transfer.py {' '.join(sys.argv[1:] if argv is None else argv)}"
        )


if __name__ == "__main__":
    main()
