"""Data pipeline throughput: the full view pipeline against raw PyAV decoding of the same frames.

For each pretraining recipe (MLFO, ctrlaug, HDC) this measures, with the same DataLoader workers on the same
synthetic h264 videos:

* **raw decode**: decode exactly the frames the recipe needs (its ``decode_indices``, drawn with the same seeds)
  to ``rgb24`` ndarrays at the stored size with PyAV (``VideoReader.get_frames``), nothing else;
* **stage 1**: the loader without augmentation (decode + view sampling + collate);
* **full, stage 2 in main**: the loader plus stage 2 on each batch in the main process, on ``--device`` (default:
  CUDA when there is a GPU, as a training run does, otherwise the CPU): ``stage2_placement(device, in_workers=False)``;
* **full, stage 2 in workers**: ``stage2_placement(in_workers=True)`` (what ``stage2_placement`` picks for a CPU run).

Rates are clips/s, one clip = all views of one video. Usage::

    python benchmarks/data_throughput.py                        # 64 videos, 96 frames, 128x170, 2 workers
    python benchmarks/data_throughput.py --size 240x320 --num-workers 2 --repeats 5

``THP_MEM_ALLOC_ENABLE=1`` (set here unless already set) lets PyTorch back large CPU tensors with huge pages;
without it every freshly allocated batch-sized buffer costs thousands of page faults (~20 ms for a 58 MB batch).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # before torch allocates anything

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from hf_vssl.data.encoding import encode_video  # noqa: E402
from hf_vssl.data.loader import build_view_dataloader, stage2_placement  # noqa: E402
from hf_vssl.data.sampling import sample_rng  # noqa: E402
from hf_vssl.methods import METHODS  # noqa: E402
from hf_vssl.video_decoding import VideoReader  # noqa: E402


# --------------------------------------------------------------------------------------------------------------
# Synthetic footage
# --------------------------------------------------------------------------------------------------------------
def textured_frames(num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """A panning 1/f-noise texture (natural-image-like spectrum) with a moving blob and sensor noise."""
    rng = np.random.default_rng(seed)
    th, tw = height + num_frames * 2 + 1, width + num_frames * 2 + 1
    fy, fx = np.fft.fftfreq(th)[:, None], np.fft.fftfreq(tw)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / max(th, tw))
    spectrum = rng.normal(size=(th, tw, 3)) + 1j * rng.normal(size=(th, tw, 3))
    texture = np.real(np.fft.ifft2(spectrum * amplitude[..., None], axes=(0, 1)))
    texture = (texture - texture.mean()) / texture.std() * 45 + 120
    vx, vy = rng.uniform(-1.0, 1.0, size=2)  # pixels per frame; the texture has 2 px of margin per frame
    yy, xx = np.mgrid[0:height, 0:width]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        y0, x0 = int(num_frames + vy * t), int(num_frames + vx * t)
        frame = texture[y0 : y0 + height, x0 : x0 + width].copy()
        cy, cx = height / 2 + height / 3 * np.sin(t / 9), width / 2 + width / 3 * np.cos(t / 7)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (height / 8) ** 2))
        frame += blob[..., None] * np.array([90.0, -40.0, 30.0])
        frame += rng.normal(0, 3, frame.shape)
        frames[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames


def write_videos(folder: Path, count: int, num_frames: int, size: tuple[int, int], gop: int) -> list[str]:
    paths = []
    for i in range(count):
        path = folder / f"video_{i:04d}.mp4"
        encode_video(textured_frames(num_frames, *size, seed=i), path, gop=gop)
        paths.append(str(path))
    return paths


# --------------------------------------------------------------------------------------------------------------
# Raw decoding baseline
# --------------------------------------------------------------------------------------------------------------
class RawDecode(Dataset):
    """Decode given frame indices of given files to rgb24 ndarrays, nothing else."""

    def __init__(self, paths: list[str], indices: list[np.ndarray]):
        self.paths, self.indices = paths, indices

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> int:
        with VideoReader(self.paths[i]) as reader:
            frames = reader.get_frames(self.indices[i])
        return frames.shape[0]  # the frames themselves are not shipped: raw decode cost only


def recipe_decode_indices(recipe, paths: list[str], seed: int) -> list[np.ndarray]:
    """The exact frames the loader will decode for each video (same seed, epoch 0, key = path)."""
    out = []
    for path in paths:
        with VideoReader(path) as reader:
            info = reader.info
            plan = recipe.plan(info, recipe.geometry_for(info), sample_rng(seed, 0, path))
        out.append(plan.decode_indices)
    return out


# --------------------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------------------
def timed_pass(loader: DataLoader, recipe=None, placement=None) -> tuple[float, float]:
    """One pass over ``loader``, each batch finished by ``placement`` (stage 2 in the main process) when given.

    Returns ``(wall seconds, CPU seconds of the main process and all workers)``.
    """
    iterator = iter(loader)  # persistent workers: started by the warm-up pass, reused here
    before = _cpu_seconds()
    start = time.perf_counter()
    for batch in iterator:
        if placement is not None:
            placement.finish(batch, recipe)
    if placement is not None and placement.device.type == "cuda":
        torch.cuda.synchronize(placement.device)
    return time.perf_counter() - start, _cpu_seconds() - before


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its live children (DataLoader workers), from /proc."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    total = own.ru_utime + own.ru_stime
    ticks = os.sysconf("SC_CLK_TCK")
    for child in multiprocessing.active_children():
        try:
            with open(f"/proc/{child.pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def _ratio(rates: dict[str, float], spread: dict[str, list[float]], key: str) -> str:
    """``rates[key] / rates["raw"]``, with the lowest and highest ratio of single repeats."""
    return f"{rates[key] / rates['raw']:.2f} ({min(spread[key]):.2f}-{max(spread[key]):.2f})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", default="mlfo,ctrlaug,hdc")
    parser.add_argument("--num-videos", type=int, default=64)
    parser.add_argument("--num-frames", type=int, default=96)
    parser.add_argument("--size", default="128x170", help="HxW of the synthetic videos")
    parser.add_argument("--gop", type=int, default=16, help="keyframe interval of the synthetic videos")
    parser.add_argument("--output-size", type=int, default=112)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per configuration (median)")
    parser.add_argument("--main-threads", type=int, default=1, help="torch threads of the main process")
    parser.add_argument("--video-dir", default=None, help="reuse/keep the synthetic videos here")
    parser.add_argument(
        "--device",
        default=None,
        help="where the main process runs stage 2 (default: cuda if available, else cpu)",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    torch.set_num_threads(args.main_threads)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    tmp = None
    if args.video_dir:
        folder = Path(args.video_dir)
        folder.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory()
        folder = Path(tmp.name)
    paths = sorted(str(p) for p in folder.glob("video_*.mp4"))
    if len(paths) != args.num_videos:
        paths = write_videos(folder, args.num_videos, args.num_frames, size, args.gop)
    kib_per_frame = sum(os.path.getsize(p) for p in paths) / len(paths) / args.num_frames / 1024

    print(
        f"# {len(paths)} h264 videos, {args.num_frames} frames, {size[0]}x{size[1]}, GOP {args.gop}, "
        f"{kib_per_frame:.1f} KiB/frame; {args.num_workers} workers, batch {args.batch_size}, "
        f"output {args.output_size}x{args.output_size}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"stage 2 in main on {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + "\n"
    )
    rows = []
    for name in args.recipes.split(","):
        recipe = METHODS[name].recipe_class()(output_size=(args.output_size, args.output_size))
        indices = recipe_decode_indices(recipe, paths, seed=0)
        workers = dict(num_workers=args.num_workers, persistent_workers=args.num_workers > 0)
        in_main, in_workers = stage2_placement(device, in_workers=False), stage2_placement(in_workers=True)
        loaders = {
            "raw": (DataLoader(RawDecode(paths, indices), args.batch_size, **workers), None),
            "stage1": (build_view_dataloader(paths, recipe, args.batch_size, **workers), None),
            "main": (
                build_view_dataloader(paths, recipe, args.batch_size, placement=in_main, **workers),
                in_main,
            ),
            "workers": (
                build_view_dataloader(paths, recipe, args.batch_size, placement=in_workers, **workers),
                None,
            ),
        }
        walls, cpus = {key: [] for key in loaders}, {key: [] for key in loaders}
        for loader, finish in loaders.values():
            timed_pass(
                loader, recipe, finish
            )  # warm-up: starts the workers; caches, allocator, lazy initialisation
        for _ in range(args.repeats):  # interleaved, so that machine noise hits every configuration alike
            for key, (loader, finish) in loaders.items():
                wall, cpu = timed_pass(loader, recipe, finish)
                walls[key].append(wall)
                cpus[key].append(cpu)
        wall_rate = {key: len(paths) / statistics.median(values) for key, values in walls.items()}
        # What the pipeline sustains on otherwise idle cores: clips per CPU-second x cores in use.
        cores = max(1, min(args.num_workers, os.cpu_count() or 1))
        cpu_rate = {key: cores * len(paths) / statistics.median(values) for key, values in cpus.items()}
        cpu_ms = {key: 1e3 * statistics.median(values) / len(paths) for key, values in cpus.items()}
        frames = int(np.mean([len(i) for i in indices]))
        # ratio of each repeat (its configurations ran back to back): the spread shows this run's noise
        cpu_spread, wall_spread = (
            {key: [raw / value for raw, value in zip(runs["raw"], runs[key])] for key in ("main", "workers")}
            for runs in (cpus, walls)
        )
        rows.append(
            {
                "name": name,
                "frames": frames,
                "cpu": (cpu_rate, cpu_spread),
                "wall": (wall_rate, wall_spread),
                "cpu_ms": cpu_ms,
            }
        )
        del loaders  # stops the persistent workers

    tables = (
        (f"CPU-time based: clips per CPU-second x {cores} cores (what otherwise idle cores sustain)", "cpu"),
        ("wall clock: clips/s as measured (includes whatever else the machine is running)", "wall"),
    )
    print("ratios: of the median rates, with the lowest and highest ratio of single repeats in brackets")
    for title, column in tables:
        print(f"\n{title}\n")
        print(
            f"| recipe | frames decoded / clip | raw decode (clips/s) | stage 1 only | full, stage 2 in main ({device.type}) | "
            "ratio | full, stage 2 in workers | ratio |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for row in rows:
            name, frames, (r, spread) = row["name"], row["frames"], row[column]
            stage1 = f"{r['stage1']:.1f} ({r['stage1'] / r['raw']:.2f})"
            print(
                f"| {name} | {frames} | {r['raw']:.1f} | {stage1} | {r['main']:.1f} | {_ratio(r, spread, 'main')} | "
                f"{r['workers']:.1f} | {_ratio(r, spread, 'workers')} |"
            )
    # Where the CPU time goes: a pipeline sustains ratio r on idle cores when its CPU cost per clip is raw / r.
    print("\nCPU milliseconds per clip, main process and workers together\n")
    print(
        f"| recipe | raw decode | stage 1 only | full, stage 2 in main ({device.type}) | full, stage 2 in workers |"
    )
    print("|---|---|---|---|---|")
    for row in rows:
        name, ms = row["name"], row["cpu_ms"]
        print(f"| {name} | {ms['raw']:.1f} | {ms['stage1']:.1f} | {ms['main']:.1f} | {ms['workers']:.1f} |")
    print(
        f"\ncommand: python benchmarks/data_throughput.py {' '.join(sys.argv[1:] if argv is None else argv)}"
    )
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
