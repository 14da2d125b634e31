"""Shared test fixtures: tiny model configurations and a subprocess runner in which hf_vssl cannot be imported."""

import os
import subprocess
import sys
import textwrap

import pytest

# Tests share two cores with each other and with subprocesses they start.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

TINY_BACKBONE = dict(
    embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], num_frames=8, image_size=32
)

# Code that makes `import hf_vssl` fail: the package is installed (editable) in the test environment, so a process
# that must load checkpoints through remote code alone blocks it explicitly instead of hoping it is absent.
BLOCK_HF_VSSL = textwrap.dedent(
    """
    import sys

    class _BlockHfVssl:
        def find_spec(self, name, path=None, target=None):
            if name == "hf_vssl" or name.startswith("hf_vssl."):
                raise ImportError("hf_vssl is blocked in this process")

    sys.meta_path.insert(0, _BlockHfVssl())
    try:
        import hf_vssl  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("hf_vssl is importable although it was blocked")
    """
)


def tiny_config(method: str, backbone: str = "r3d", **overrides):
    """A tiny configuration of ``method`` (32x32 clips of 8 frames, stage widths 8-64)."""
    import hf_vssl

    config_class = hf_vssl.METHODS[method].config
    return config_class(backbone=backbone, **{**TINY_BACKBONE, **overrides})


def run_without_hf_vssl(
    code: str, cwd, env: dict | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python in which ``import hf_vssl`` fails; raise with its output if it fails."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_HF_VSSL + textwrap.dedent(code)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"subprocess failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def no_hf_vssl_runner(tmp_path):
    """``run(code, env=None)`` runs code in a subprocess without hf_vssl, in an empty working directory."""
    workdir = tmp_path / "no_hf_vssl"
    workdir.mkdir()
    return lambda code, env=None, timeout=300: run_without_hf_vssl(code, workdir, env, timeout)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A tiny labelled set for training-script tests: 12 synthetic videos (4 classes) as a folder and as shards,
    plus 8 validation videos."""
    from hf_vssl.data.synthetic import write_synthetic_shards, write_synthetic_videos

    root = tmp_path_factory.mktemp("data")
    classes = ("left", "right", "up", "down")
    shards = root / "shards"
    write_synthetic_shards(
        shards, num_per_class=3, num_frames=36, size=(40, 40), classes=classes, num_shards=4
    )
    folder = root / "folder"
    write_synthetic_videos(folder / "train", num_per_class=3, num_frames=36, size=(40, 40), classes=classes)
    write_synthetic_videos(
        folder / "validation", num_per_class=2, num_frames=36, size=(40, 40), classes=classes, seed=1
    )
    return {"shards": shards, "train": folder / "train", "validation": folder / "validation"}


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    """`tiny_data`'s labelled folders without its shards (for tests that read folders only): 12 training videos
    (4 classes) in ``motion/train``, 8 validation videos in ``motion/validation``."""
    from hf_vssl.data.synthetic import write_synthetic_videos

    root = tmp_path_factory.mktemp("folders") / "motion"
    classes = ("left", "right", "up", "down")
    write_synthetic_videos(root / "train", num_per_class=3, num_frames=36, size=(40, 40), classes=classes)
    write_synthetic_videos(
        root / "validation", num_per_class=2, num_frames=36, size=(40, 40), classes=classes, seed=1
    )
    return {"train": root / "train", "validation": root / "validation"}
