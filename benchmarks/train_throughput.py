"""Training throughput: the real pretraining loop end to end against the same step on tensors already on the device.

For each method, from its paper configuration (``training/configs/<method>_*_k400.yaml``: model, views, batch,
bf16) with the speed settings of a run (channels-last on CUDA, ``--compile`` for ``torch.compile``):

* **loop**: ``hf_vssl.train.pretrain.train`` itself (decode in DataLoader workers -> views -> step, accelerate,
  autocast, hooks) on synthetic h264 videos; videos/s from its own log over the steps after the first (the
  first step's window holds worker start-up and, with ``--compile``, compilation);
* **synthetic**: the same model and settings stepping on one real batch kept on the device (no data work):
  what the device can do at that shape (median of steps timed before and after the loop);
* their ratio (how much the data starves the device), the step's FLOPs from ``torch.utils.flop_counter`` (forward
  + backward), the achieved TFLOP/s of both rates and their fraction of the device's peak (``--peak-tflops``;
  known bf16 dense peaks for common GPUs by default), and the peak memory (device memory on CUDA; the process's
  peak resident memory on CPU).

    python benchmarks/train_throughput.py                       # CUDA: paper sizes; CPU: tiny widths, 32 px
    python benchmarks/train_throughput.py --methods mlfo --steps 30 --num-workers 14 --compile
    python benchmarks/train_throughput.py --device cpu --tiny --num-videos 8 --batch-size 2 --steps 3

Figures are printed as a markdown table; nothing is asserted.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accelerate.state import AcceleratorState, GradientState  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from hf_vssl.data.loader import build_view_dataloader, stage2_placement  # noqa: E402
from hf_vssl.data.sources import load_video_source  # noqa: E402
from hf_vssl.data.synthetic import MOTION_CLASSES, write_synthetic_videos  # noqa: E402
from hf_vssl.methods import METHODS  # noqa: E402
from hf_vssl.train import pretrain  # noqa: E402
from hf_vssl.train.arguments import parse_arguments  # noqa: E402
from hf_vssl.train.speed import channels_last_clips, compile_model, to_channels_last  # noqa: E402

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' datasheets, matched against the device name.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}
# Small enough for a CPU: the paper backbone's layout at widths 16-128, one block per stage, 32-pixel clips.
TINY = {
    "embedding_size": 16,
    "hidden_sizes": [16, 32, 64, 128],
    "depths": [1, 1, 1, 1],
    "image_size": 32,
    "num_prototypes": 16,
}


def default_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_TFLOPS.items() if key in name), None)


def run_arguments(method: str, args, train_dir: Path, output_dir: Path):
    """The method's paper run configuration, with this benchmark's sizes."""
    spec = METHODS[method]
    role = next((r for r in spec.configs if "k400" in r), next(iter(spec.configs)))
    options = [
        "--config", str(spec.config_file(role)),
        "--train_dir", str(train_dir),
        "--output_dir", str(output_dir),
        "--overwrite_output_dir", "true",
        "--max_steps", str(args.steps),
        "--logging_steps", str(args.steps),
        "--checkpointing_steps", str(10 * args.steps),
        "--dataloader_num_workers", str(args.num_workers),
        "--shuffle_buffer_size", "0",
        "--report_to", "jsonl",
        "--mixed_precision", args.mixed_precision,
        "--torch_compile", str(args.compile).lower(),
    ]  # fmt: skip
    if args.batch_size:
        options += ["--per_device_train_batch_size", str(args.batch_size)]
    run = parse_arguments(options)
    if args.tiny:
        run.model = {
            **run.model,
            **{k: v for k, v in TINY.items() if k != "num_prototypes" or method == "mlfo"},
        }
    run.validation_dir = None
    return run


def loop_rate(run, device_type: str) -> float:
    """Videos/s of the real loop over the steps after the first, from its own log."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    pretrain.train(run)
    records = [json.loads(line) for line in (Path(run.output_dir) / "logs" / "metrics.jsonl").open()]
    rates = [r["train/clips_per_second"] for r in records if "train/clips_per_second" in r and r["step"] > 1]
    return rates[-1] if rates else float("nan")


def synthetic_step(run, device: torch.device, compile_backend: str | None):
    """The run's model, optimizer and one real batch on the device; returns (step function, batch size)."""
    torch.manual_seed(0)
    model = pretrain.build_model(run).to(device).train()
    recipe = pretrain.build_method_recipe(run, model.config)
    placement = stage2_placement(device)
    loader = build_view_dataloader(
        load_video_source(run.train_dir),
        recipe,
        batch_size=run.per_device_train_batch_size,
        num_workers=0,
        seed=0,
        placement=placement,
        drop_last=True,
    )
    batch = next(iter(loader))
    batch.pop("num_skipped", None)
    views = placement.finish({k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}, recipe)
    channels_last = device.type == "cuda" if run.channels_last is None else run.channels_last
    if channels_last:
        to_channels_last(model)
        views = channels_last_clips(views)
    optimizer = pretrain.build_optimizer(run, model)
    if hasattr(model, "set_epoch"):
        model.set_epoch(0)
    forward = compile_model(model, compile_backend) if compile_backend else model
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(run.mixed_precision)

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = forward(**views).loss
        loss.backward()
        if hasattr(model, "before_optimizer_step"):
            model.before_optimizer_step()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if hasattr(model, "after_optimizer_step"):
            model.after_optimizer_step()

    return step, views["pixel_values"].shape


def timed(step, repeats: int, device: torch.device, warmup: int = 2) -> list[float]:
    """Seconds of each of `repeats` steps, after `warmup` steps (compilation, allocator)."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=sorted(METHODS), choices=sorted(METHODS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny widths and 32-px clips (default on CPU)")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="videos per step (default: the config's)"
    )
    parser.add_argument(
        "--steps", type=int, default=20, help="steps of the real loop (the first is not timed)"
    )
    parser.add_argument("--repeats", type=int, default=10, help="timed synthetic steps")
    parser.add_argument(
        "--num-videos", type=int, default=None, help="synthetic source videos (default 4 batches)"
    )
    parser.add_argument("--video-size", default="128x170", help="HxW of the synthetic source videos")
    parser.add_argument("--num-workers", type=int, default=min(14, os.cpu_count() or 1))
    parser.add_argument("--mixed-precision", default=None, help="no / bf16 / fp16 (default: bf16 on CUDA)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (inductor)")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for the fraction column")
    parser.add_argument("--video-dir", default=None, help="where to write (or reuse) the synthetic videos")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        os.environ.setdefault("ACCELERATE_USE_CPU", "1")
        args.tiny = True
    if args.mixed_precision is None:
        args.mixed_precision = "bf16" if device.type == "cuda" else "no"
    peak = args.peak_tflops or default_peak(device)
    height, width = map(int, args.video_size.split("x"))

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for method in args.methods:
            run = run_arguments(method, args, scratch, scratch / f"run-{method}")  # videos set below
            batch = run.per_device_train_batch_size
            num_videos = args.num_videos or 4 * batch
            train_dir = Path(args.video_dir or scratch / "videos") / f"{num_videos}x{args.video_size}"
            classes = MOTION_CLASSES[: min(num_videos, len(MOTION_CLASSES))]
            write_synthetic_videos(
                train_dir,
                num_per_class=-(-num_videos // len(classes)),
                num_frames=96,
                size=(height, width),
                classes=classes,
            )
            run.train_dir = str(train_dir)

            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            step, shape = synthetic_step(run, device, args.compile_backend if args.compile else None)
            with FlopCounterMode(display=False) as counter:
                step()
            flops = counter.get_total_flops()
            videos = shape[0]
            clip = (
                f"{shape[1]} views x {shape[2]}x{shape[-1]}²"
                if len(shape) == 6
                else f"{shape[1]}x{shape[-1]}²"
            )
            times = timed(step, args.repeats, device)
            memory = (
                torch.cuda.max_memory_allocated(device) / 2**30
                if device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            )
            loop = loop_rate(run, device.type)
            # Half the synthetic steps before the loop and half after, so that a machine whose load drifts (a
            # shared CPU) weighs on both figures alike; the median of all.
            times += timed(step, max(args.repeats // 2, 1), device, warmup=0)
            synthetic = videos / statistics.median(times)
            del step
            rows.append((method, clip, videos, loop, synthetic, flops, memory))

    model = "tiny widths" if args.tiny else "paper config"
    print(
        f"device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), {model}, "
        f"mixed_precision={args.mixed_precision}, compile={args.compile}, workers={args.num_workers}, "
        f"sources {args.video_size}, peak={peak or '-'} TFLOP/s\n"
    )
    print(
        "| method | views x clip | batch | loop videos/s | synthetic videos/s | loop / synthetic | GFLOP/video (fwd+bwd) "
        "| TFLOP/s loop | TFLOP/s synthetic | fraction of peak (loop / synthetic) | peak memory GiB |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for method, clip, videos, loop, synthetic, flops, memory in rows:
        per_video = flops / videos
        loop_tflops, synthetic_tflops = per_video * loop / 1e12, per_video * synthetic / 1e12
        fraction = f"{loop_tflops / peak:.1%} / {synthetic_tflops / peak:.1%}" if peak else "-"
        print(
            f"| {method} | {clip} | {videos} | {loop:.1f} | {synthetic:.1f} | {loop / synthetic:.2f} | "
            f"{per_video / 1e9:.2f} | {loop_tflops:.3f} | {synthetic_tflops:.3f} | {fraction} | {memory:.2f} |"
        )
    if device.type == "cpu":
        print("\npeak memory on CPU: the benchmark process's peak resident set (loop and synthetic together)")


if __name__ == "__main__":
    main()
