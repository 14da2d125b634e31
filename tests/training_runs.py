"""Helpers for tests that run the training scripts as users do (a tiny MLFO run, subprocesses, checkpoints)."""

import os
import subprocess
from pathlib import Path

import yaml
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
PRETRAIN = REPO / "training" / "pretrain.py"
EVALUATE = REPO / "training" / "evaluate.py"

# The tiny backbone and embedding every method's training-script tests use (16-frame 32x32 clips, widths 8-32).
TINY_MODEL = {
    "embedding_size": 8,
    "hidden_sizes": [8, 16, 16, 32],
    "depths": [1, 1, 1, 1],
    "num_frames": 16,
    "image_size": 32,
    "projection_dim": 16,
}

TINY_RUN = {
    "method": "mlfo",
    "model": {
        **TINY_MODEL,
        "num_prototypes": 8,
        "logit_queue_size": 16,
        "motion_excitation_reduction": 4,
        "logit_queue_start_epoch": 1,
        "graph_start_epoch": 1,
    },
    "recipe": {"squash_size": None},
    "per_device_train_batch_size": 2,
    "num_train_epochs": 1,
    "dataloader_num_workers": 1,
    "shuffle_buffer_size": 8,
    "checkpointing_steps": 2,
    "logging_steps": 1,
}


def run_config(tmp_path, **overrides) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**TINY_RUN, **overrides}))
    return path


def run_args(config: Path, train_dir, output_dir, *options: str) -> list[str]:
    """The arguments of one pretraining run (for ``training/pretrain.py`` or ``parse_arguments``)."""
    return ["--config", str(config), "--train_dir", str(train_dir), "--output_dir", str(output_dir), *options]


def run_ok(args, env=None, timeout=600):
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    result = subprocess.run(args, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=REPO)
    assert result.returncode == 0, (
        f"{' '.join(map(str, args))}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    )
    return result


def final_checkpoint_weights(out: Path) -> dict:
    newest = max((out / "checkpoints").iterdir(), key=lambda p: int(p.name.split("_")[-1]))
    return load_file(newest / "model.safetensors")
