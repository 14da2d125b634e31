"""Synthetic moving-shape videos whose class is the motion.

Each video shows two or three bright checker-textured shapes (bar, ellipse, triangle or L) over a static dark
background (random two-colour gradient plus a few soft static blobs); all of them perform the class's motion.
Shapes, colours, sizes, orientations, background and start positions are random, so a single frame carries no
information about the class; only the motion does:

=============  ========================================================================
class          motion
=============  ========================================================================
left / right   translation along x at 1.5-3 px/frame (the canvas wraps around)
up / down      translation along y at 1.5-3 px/frame
rotate_cw      rotation by 5-9 degrees/frame, clockwise on screen (plus a slow drift <= 0.2 px/frame)
rotate_ccw     the same, counter-clockwise
grow / shrink  scaling by a total factor of 2.5-3.5 over the video (plus a slow drift)
=============  ========================================================================

Everything is deterministic from ``seed``. Videos are written as real encoded files (``libx264`` or
``mpeg4`` MP4), either as a folder with one sub-folder per class (:func:`write_synthetic_videos`) or as
WebDataset shards with a dataset card (:func:`write_synthetic_shards`); both are read back with
:func:`hf_vssl.data.sources.load_video_source`, so demos and tests exercise the real decode path offline.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .encoding import encode_video

__all__ = [
    "MOTION_CLASSES",
    "SHAPES",
    "object_track",
    "render_motion_video",
    "synthetic_video_frames",
    "write_synthetic_videos",
    "write_synthetic_shards",
]

MOTION_CLASSES = ("left", "right", "up", "down", "rotate_cw", "rotate_ccw", "grow", "shrink")
SHAPES = ("bar", "ellipse", "triangle", "ell")
MANIFEST_NAME = ".synthetic_manifest.json"
MANIFEST_VERSION = 2  # bump whenever rendering changes, so stale sets are regenerated

_TRANSLATIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}


# ----------------------------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------------------------
def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Static dark background ``float32 [H, W, 3]``: a two-colour gradient plus soft blobs, all below ~90.

    Backgrounds stay dark and objects bright (:func:`_bright_colour`), so a moving edge always has the same
    contrast polarity. With arbitrary colours a small 3D CNN needs many times longer to pick up direction.
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * x / width + np.sin(angle) * y / height + 1.0) / 2.0  # ~0..1
    colour_a, colour_b = rng.uniform(0, 70, size=(2, 3)).astype(np.float32)
    image = colour_a + (colour_b - colour_a) * ramp[..., None]
    for _ in range(3):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        radius = rng.uniform(0.08, 0.2) * min(height, width)
        weight = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * radius**2))[..., None] * 0.6
        image = image * (1 - weight) + rng.uniform(0, 90, size=3).astype(np.float32) * weight
    return image


def _bright_colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated or pastel colour whose brightest channel is >= 190 and mean >= 120."""
    while True:
        colour = rng.uniform(0, 255, size=3)
        colour[rng.integers(3)] = rng.uniform(190, 255)
        if colour.mean() >= 120:
            return colour.astype(np.float32)


def _shape_distance(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Approximate signed distance (in shape units, negative inside) to ``shape`` at canonical coords."""
    if shape == "bar":
        return np.maximum(np.abs(u) - 1.0, np.abs(v) - 0.38)
    if shape == "ellipse":
        return (np.sqrt(u**2 + (v / 0.5) ** 2) - 1.0) * 0.5
    if shape == "triangle":  # pointing along +u: clearly oriented
        edges = [-u - 0.7, 0.45 * u + 0.9 * v - 0.45, 0.45 * u - 0.9 * v - 0.45]
        return np.maximum.reduce(edges)
    if shape == "ell":  # L: union of two bars
        vertical = np.maximum(np.abs(u + 0.6) - 0.35, np.abs(v) - 1.0)
        horizontal = np.maximum(np.abs(u) - 0.95, np.abs(v - 0.65) - 0.35)
        return np.minimum(vertical, horizontal)
    raise ValueError(f"Unknown shape {shape!r}; expected one of {SHAPES}")


def object_track(
    motion: str, rng: np.random.Generator, num_frames: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame ``(centre_x, centre_y, angle, scale)`` of one object, each ``float32 [T]``."""
    t = np.arange(num_frames, dtype=np.float32)
    angle0 = rng.uniform(0, 2 * np.pi)
    angle = np.full(num_frames, angle0, dtype=np.float32)
    scale = np.full(num_frames, rng.uniform(0.85, 1.15), dtype=np.float32)
    if motion in _TRANSLATIONS:
        direction = np.array(_TRANSLATIONS[motion])
        start = rng.uniform(0, [width, height])  # anywhere: the canvas wraps around
        velocity = direction * rng.uniform(1.5, 3.0) + rng.uniform(-0.2, 0.2, size=2) * (direction == 0)
    else:
        start = rng.uniform(0.2, 0.8, size=2) * [width, height]
        velocity = rng.uniform(-0.2, 0.2, size=2)  # slow drift, far below the translation speeds
        if motion.startswith("rotate"):
            # image y points down, so an increasing angle turns clockwise on screen
            sign = 1.0 if motion == "rotate_cw" else -1.0
            angle = (angle0 + sign * np.deg2rad(rng.uniform(5.0, 9.0)) * t).astype(np.float32)
        else:
            small = 0.5
            large = small * rng.uniform(2.5, 3.5)
            progress = t / max(num_frames - 1, 1)
            log_scale = np.log(small) + progress * np.log(large / small)
            scale = np.exp(log_scale if motion == "grow" else log_scale[::-1]).astype(np.float32)
    centre_x = (start[0] + velocity[0] * t).astype(np.float32)
    centre_y = (start[1] + velocity[1] * t).astype(np.float32)
    return centre_x, centre_y, angle, scale


def render_motion_video(
    motion: str,
    num_frames: int = 48,
    size: tuple[int, int] = (80, 80),
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Render one video of ``motion`` (one of :data:`MOTION_CLASSES`).

    Two or three textured objects (random shape, colours, size, checker scale, start) all perform the class's
    motion, each with its own speed; more moving texture means a stronger motion signal for small models.

    Returns:
        ``uint8`` array ``[num_frames, H, W, 3]`` (RGB).
    """
    if motion not in MOTION_CLASSES:
        raise ValueError(f"Unknown motion class {motion!r}; expected one of {MOTION_CLASSES}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    height, width = size
    background = _background(rng, height, width)
    frames = np.broadcast_to(background, (num_frames, height, width, 3)).copy()
    xs = np.arange(width, dtype=np.float32)[None, None, :]
    ys = np.arange(height, dtype=np.float32)[None, :, None]
    for _ in range(int(rng.integers(2, 4))):
        shape = SHAPES[rng.integers(len(SHAPES))]
        colour = _bright_colour(rng)
        second = colour * rng.uniform(0.6, 0.8)  # darker checker squares, still brighter than the background
        checker = rng.uniform(0.45, 0.7)  # checker cell in shape units; finer cells alias at low resolution
        radius = rng.uniform(0.12, 0.18) * min(height, width)  # half of the long axis, pixels
        if motion in ("grow", "shrink"):
            radius *= 0.8
        centre_x, centre_y, angle, scale = object_track(motion, rng, num_frames, height, width)
        # offsets from the centre on a torus, so objects leaving one side re-enter on the other: [T, H, W]
        dx = (xs - centre_x[:, None, None] + width / 2) % width - width / 2
        dy = (ys - centre_y[:, None, None] + height / 2) % height - height / 2
        cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
        unit = (radius * scale)[:, None, None]
        u = (cos * dx + sin * dy) / unit
        v = (-sin * dx + cos * dy) / unit
        # signed distance in pixels -> 1-pixel anti-aliased coverage
        coverage = np.clip(0.5 - _shape_distance(shape, u, v) * unit, 0.0, 1.0)[..., None]
        # texture fixed to the object, so its interior moves (not only its outline)
        parity = (np.floor(u / checker) + np.floor(v / checker)) % 2
        paint = np.where(parity[..., None] > 0, second, colour)
        frames = frames * (1.0 - coverage) + paint * coverage
    return np.clip(frames + 0.5, 0, 255).astype(np.uint8)


def synthetic_video_frames(
    class_index: int,
    video_index: int,
    *,
    classes: Sequence[str] = MOTION_CLASSES,
    num_frames: int = 48,
    size: tuple[int, int] = (80, 80),
    seed: int = 0,
) -> np.ndarray:
    """Frames of video ``video_index`` of class ``classes[class_index]``; deterministic from ``seed``."""
    rng = np.random.default_rng([seed, class_index, video_index])
    return render_motion_video(classes[class_index], num_frames, size, rng)


# ----------------------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------------------
def _check_args(classes: Sequence[str] | None, size: tuple[int, int], codec: str) -> tuple[str, ...]:
    classes = tuple(classes or MOTION_CLASSES)
    unknown = [c for c in classes if c not in MOTION_CLASSES]
    if unknown:
        raise ValueError(f"Unknown motion classes {unknown}; choose from {MOTION_CLASSES}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"Duplicate classes in {classes}")
    if size[0] % 2 or size[1] % 2 or min(size) < 16:
        raise ValueError(f"size must be even and at least 16x16 (yuv420p), got {size}")
    if codec not in ("libx264", "mpeg4"):
        raise ValueError(f"codec must be 'libx264' or 'mpeg4', got {codec!r}")
    return classes


def _encode(frames: np.ndarray, fps: int, codec: str, gop: int) -> bytes:
    return encode_video(frames, fps=fps, codec=codec, gop=gop, crf=20, preset="fast")


def _manifest_matches(path: Path, params: dict, files: list[Path]) -> bool:
    if not path.is_file():
        return False
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("params") != params:
        return False
    sizes = manifest.get("sizes", {})
    return all(f.is_file() and sizes.get(f.name) == f.stat().st_size for f in files)


def _write_manifest(path: Path, params: dict, files: list[Path]) -> None:
    payload = {"params": params, "sizes": {f.name: f.stat().st_size for f in files}}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    os.replace(tmp, path)


def write_synthetic_videos(
    out_dir: str | os.PathLike,
    num_per_class: int = 16,
    num_frames: int = 48,
    size: tuple[int, int] = (80, 80),
    codec: str = "libx264",
    seed: int = 0,
    classes: Sequence[str] | None = None,
    *,
    fps: int = 25,
    gop: int = 16,
) -> list[Path]:
    """Write ``num_per_class`` videos per motion class as ``out_dir/{class}/{class}_{i:04d}.mp4``.

    Nothing is rewritten when ``out_dir`` already holds a matching set (checked against a small manifest,
    ``out_dir/.synthetic_manifest.json``). ``load_video_source(out_dir)`` reads it with a ``ClassLabel``.

    Returns:
        The video paths, class by class.
    """
    classes = _check_args(classes, size, codec)
    out_dir = Path(out_dir)
    params = _params(num_per_class, num_frames, size, codec, seed, classes, fps, gop)
    paths = [out_dir / c / f"{c}_{i:04d}.mp4" for c in classes for i in range(num_per_class)]
    manifest = out_dir / MANIFEST_NAME
    if _manifest_matches(manifest, params, paths):
        return paths
    _remove_previous(manifest, out_dir)
    for path in paths:
        class_index = classes.index(path.parent.name)
        video_index = int(path.stem.rsplit("_", 1)[1])
        frames = synthetic_video_frames(
            class_index, video_index, classes=classes, num_frames=num_frames, size=size, seed=seed
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_encode(frames, fps, codec, gop))
    _write_manifest(manifest, params, paths)
    return paths


def write_synthetic_shards(
    out_dir: str | os.PathLike,
    num_per_class: int = 16,
    num_frames: int = 48,
    size: tuple[int, int] = (80, 80),
    codec: str = "libx264",
    seed: int = 0,
    classes: Sequence[str] | None = None,
    *,
    num_shards: int = 4,
    split: str = "train",
    fps: int = 25,
    gop: int = 16,
) -> list[Path]:
    """Write the same videos as :func:`write_synthetic_videos` as WebDataset shards plus a dataset card.

    Shards are ``out_dir/{split}-{j:05d}.tar`` with members ``{class}/{class}_{i:04d}.{mp4,cls,json}`` (the
    same keys the folder layout gets), classes interleaved in a seeded order. Several splits (e.g. ``train``
    with ``seed=0`` and ``validation`` with ``seed=1``) can share ``out_dir``; the card lists all of them.

    Returns:
        The shard paths.
    """
    from .prepare import TarShardWriter, write_dataset_card

    classes = _check_args(classes, size, codec)
    out_dir = Path(out_dir)
    total = len(classes) * num_per_class
    num_shards = max(1, min(num_shards, total))
    params = {
        **_params(num_per_class, num_frames, size, codec, seed, classes, fps, gop),
        "num_shards": num_shards,
    }
    shards = [out_dir / f"{split}-{j:05d}.tar" for j in range(num_shards)]
    manifest = out_dir / f".synthetic_manifest_{split}.json"
    if _manifest_matches(manifest, params, shards):
        return shards
    _remove_previous(manifest, out_dir)
    order = np.random.default_rng([seed, 7919]).permutation(total)  # interleave classes across shards
    bounds = [(j * total) // num_shards for j in range(num_shards + 1)]
    for j, shard in enumerate(shards):
        with TarShardWriter(shard) as writer:
            for flat in order[bounds[j] : bounds[j + 1]]:
                class_index, video_index = divmod(int(flat), num_per_class)
                name = classes[class_index]
                frames = synthetic_video_frames(
                    class_index, video_index, classes=classes, num_frames=num_frames, size=size, seed=seed
                )
                key = f"{name}/{name}_{video_index:04d}"
                meta = {
                    "key": key,
                    "label": class_index,
                    "label_name": name,
                    "source": f"synthetic:seed={seed}",
                    "num_frames": num_frames,
                    "fps": float(fps),
                    "height": size[0],
                    "width": size[1],
                    "reencoded": False,
                }
                writer.write(key, _encode(frames, fps, codec, gop), class_index, meta)
    splits = {split} | {
        p.name[len(".synthetic_manifest_") : -len(".json")]
        for p in out_dir.glob(".synthetic_manifest_*.json")
    }
    write_dataset_card(out_dir, list(classes), splits)
    _write_manifest(manifest, params, shards)
    return shards


def _params(num_per_class, num_frames, size, codec, seed, classes, fps, gop) -> dict:
    return {
        "version": MANIFEST_VERSION,
        "num_per_class": int(num_per_class),
        "num_frames": int(num_frames),
        "size": [int(size[0]), int(size[1])],
        "codec": codec,
        "seed": int(seed),
        "classes": list(classes),
        "fps": int(fps),
        "gop": int(gop),
    }


def _remove_previous(manifest: Path, out_dir: Path) -> None:
    """Delete the files a previous (different) generation listed, so stale videos cannot linger."""
    if not manifest.is_file():
        return
    try:
        previous = json.loads(manifest.read_text()).get("sizes", {})
    except (OSError, ValueError):
        previous = {}
    for name in previous:
        for candidate in [out_dir / name, *out_dir.glob(f"*/{name}")]:
            if candidate.is_file():
                candidate.unlink()
    manifest.unlink()
