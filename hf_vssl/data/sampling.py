"""Stage-1 parameter sampling: per-sample randomness, crop boxes, colour parameters and frame geometry.

Everything here is numpy and runs per video in the DataLoader workers; a recipe (:mod:`hf_vssl.data.recipes`)
draws a view's parameters with these functions, and stage 2 (:mod:`hf_vssl.data.rendering`) renders them.

Geometry conventions (used by every recorded box, and by ctrlaug's tubes):

* Boxes are ``(x0, y0, x1, y1)`` in pixel-edge coordinates: pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``,
  so a box covers ``[x0, x1) x [y0, y1)`` and the full frame is ``(0, 0, W, H)``. ``crop_boxes`` are in
  **source** pixels (the video as stored, display orientation); the box actually cut from the canvas is the
  same region snapped to whole canvas pixels (:meth:`FrameGeometry.snap`), and ``crop_boxes`` records that
  snapped region exactly.
* A flipped view is mirrored horizontally *after* cropping; its box is not mirrored.
* Time: source frame ``f`` covers ``[f, f+1)`` in frame units.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BRIGHTNESS",
    "COLOR_KEYS",
    "CONTRAST",
    "HUE",
    "SATURATION",
    "ColorSpec",
    "CropSpec",
    "FrameGeometry",
    "box_coverage",
    "sample_color_params",
    "sample_crop_box",
    "sample_rng",
]

# jitter operation ids used in `jitter_order`
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3
GRAY_MODES = ("luma", "channel")

# per-view parameter arrays produced by `sample_color_params`, all [V, T]
COLOR_KEYS = ("brightness", "contrast", "saturation", "hue", "gray", "gray_channel", "blur_sigma")


# --------------------------------------------------------------------------------------------------------------
# Randomness
# --------------------------------------------------------------------------------------------------------------
def sample_rng(seed: int, epoch: int, key: str | int) -> np.random.Generator:
    """The generator of one sample: a pure function of ``(seed, epoch, key)``.

    Views therefore do not depend on worker count, process rank or iteration order, and a resumed run
    re-creates exactly the views it would have seen.
    """
    digest = hashlib.blake2b(str(key).encode("utf-8"), digest_size=16).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return np.random.default_rng(
        np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF, *words])
    )


# --------------------------------------------------------------------------------------------------------------
# Spatial parameters
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CropSpec:
    """A random resized crop (Inception style): a box with a random area fraction and aspect ratio.

    Args:
        scale: range of the box area as a fraction of the frame area.
        ratio: range of the box aspect ratio ``w / h``.
        log_ratio: draw the aspect ratio uniformly in log space (torchvision) instead of linearly (MLFO's code).
        swap_prob: probability of swapping the drawn width and height (MLFO's code does with 0.5).
        attempts: draws before falling back to the centred square of the short side.
    """

    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    log_ratio: bool = True
    swap_prob: float = 0.0
    attempts: int = 10

    def __post_init__(self):
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(f"CropSpec.scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"CropSpec.ratio must satisfy 0 < min <= max, got {self.ratio}")
        if not 0 <= self.swap_prob <= 1 or self.attempts < 1:
            raise ValueError(f"CropSpec needs swap_prob in [0, 1] and attempts >= 1, got {self}")


def sample_crop_box(rng: np.random.Generator, height: int, width: int, spec: CropSpec | None) -> np.ndarray:
    """Draw one crop box in a ``height x width`` frame.

    Returns:
        ``float64 [4]`` box ``(x0, y0, x1, y1)`` with integer corners; the whole frame when ``spec`` is None.
    """
    if spec is None:
        return np.array([0.0, 0.0, width, height])
    area = height * width
    for _ in range(spec.attempts):
        target = area * rng.uniform(*spec.scale)
        if spec.log_ratio:
            aspect = math.exp(rng.uniform(math.log(spec.ratio[0]), math.log(spec.ratio[1])))
        else:
            aspect = rng.uniform(*spec.ratio)
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if spec.swap_prob and rng.random() < spec.swap_prob:
            w, h = h, w
        if 0 < w <= width and 0 < h <= height:
            x0 = int(rng.integers(0, width - w + 1))
            y0 = int(rng.integers(0, height - h + 1))
            return np.array([x0, y0, x0 + w, y0 + h], dtype=np.float64)
    side = min(height, width)  # fallback: centred square of the short side
    x0, y0 = (width - side) // 2, (height - side) // 2
    return np.array([x0, y0, x0 + side, y0 + side], dtype=np.float64)


def box_coverage(inner: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """Fraction of the area of ``inner`` boxes ``[..., 4]`` that lies inside ``outer`` boxes ``[..., 4]``."""
    ix = np.clip(np.minimum(inner[..., 2], outer[..., 2]) - np.maximum(inner[..., 0], outer[..., 0]), 0, None)
    iy = np.clip(np.minimum(inner[..., 3], outer[..., 3]) - np.maximum(inner[..., 1], outer[..., 1]), 0, None)
    area = (inner[..., 2] - inner[..., 0]) * (inner[..., 3] - inner[..., 1])
    return ix * iy / np.maximum(area, 1e-12)


# --------------------------------------------------------------------------------------------------------------
# Photometric parameters
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ColorSpec:
    """Colour jitter, random gray and Gaussian blur of one view.

    Args:
        brightness, contrast, saturation: jitter strengths; the factor is drawn from ``U(max(0, 1-s), 1+s)``.
        hue: hue shift drawn from ``U(-hue, hue)``, as a fraction of the colour circle (``<= 0.5``).
        jitter_prob: probability that jitter is applied to a draw (identity parameters otherwise).
        random_order: apply the four jitter operations in a random order per draw (torchvision does).
        gray_prob: probability of turning a draw gray.
        gray_mode: ``"luma"`` (ITU-R 601 gray) or ``"channel"`` (one random RGB channel repeated, MLFO's code).
        blur_prob: probability of blurring a view (one draw per view, never per frame).
        blur_sigma: range of the blur's standard deviation, in output pixels.
        per_frame: one jitter/gray draw per frame (MLFO's code) instead of one per view.
    """

    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    jitter_prob: float = 1.0
    random_order: bool = True
    gray_prob: float = 0.0
    gray_mode: str = "luma"
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    per_frame: bool = False

    def __post_init__(self):
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"ColorSpec.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"ColorSpec.hue must be in [0, 0.5], got {self.hue}")
        for name in ("jitter_prob", "gray_prob", "blur_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"ColorSpec.{name} must be a probability, got {getattr(self, name)}")
        if self.gray_mode not in GRAY_MODES:
            raise ValueError(f"ColorSpec.gray_mode must be one of {GRAY_MODES}, got {self.gray_mode!r}")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"ColorSpec.blur_sigma must satisfy 0 < min <= max, got {self.blur_sigma}")


NO_COLOR = ColorSpec()


def sample_color_params(
    rng: np.random.Generator, num_views: int, num_frames: int, spec: ColorSpec | None
) -> dict[str, np.ndarray]:
    """Draw the photometric parameters of ``num_views`` views of ``num_frames`` frames.

    Returns:
        ``brightness``, ``contrast``, ``saturation`` (factors, 1 = identity), ``hue`` (shift, 0 = identity),
        ``gray`` (bool), ``gray_channel`` (0-2, or -1 for luma), ``blur_sigma`` (0 = no blur), each
        ``[num_views, num_frames]``, and ``jitter_order`` ``int64 [num_views, num_frames, 4]`` (a permutation
        of the operation ids ``BRIGHTNESS, CONTRAST, SATURATION, HUE``).
    """
    spec = spec or NO_COLOR
    draws = num_frames if spec.per_frame else 1
    shape = (num_views, draws)

    def factor(strength: float) -> np.ndarray:
        return rng.uniform(max(0.0, 1.0 - strength), 1.0 + strength, shape)

    applied = rng.random(shape) < spec.jitter_prob
    params = {
        "brightness": np.where(applied, factor(spec.brightness), 1.0),
        "contrast": np.where(applied, factor(spec.contrast), 1.0),
        "saturation": np.where(applied, factor(spec.saturation), 1.0),
        "hue": np.where(applied, rng.uniform(-spec.hue, spec.hue, shape), 0.0),
    }
    order = np.broadcast_to(np.arange(4), (*shape, 4))
    params["jitter_order"] = rng.permuted(order, axis=-1) if spec.random_order else order.copy()
    params["gray"] = rng.random(shape) < spec.gray_prob
    if spec.gray_mode == "channel":
        params["gray_channel"] = rng.integers(0, 3, shape)
    else:
        params["gray_channel"] = np.full(shape, -1)
    blurred = rng.random((num_views, 1)) < spec.blur_prob
    params["blur_sigma"] = np.where(blurred, rng.uniform(*spec.blur_sigma, (num_views, 1)), 0.0)

    dtypes = {"gray": np.bool_, "gray_channel": np.int64, "jitter_order": np.int64}
    out = {}
    for name, value in params.items():
        target = (num_views, num_frames, 4) if name == "jitter_order" else (num_views, num_frames)
        out[name] = np.array(np.broadcast_to(value, target), dtype=dtypes.get(name, np.float32), order="C")
    return out


# --------------------------------------------------------------------------------------------------------------
# Frame geometry
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FrameGeometry:
    """The three frames a video's boxes live in.

    Attributes:
        source_size: ``(H, W)`` of the video as stored (display orientation); ``crop_boxes`` are recorded here.
        canvas_size: ``(H, W)`` of the decoded frames that stage 2 cuts from.
        sampling_size: ``(H, W)`` of the frame in which recipes draw boxes (the source, or e.g. MLFO's
            200x150 squashed frame); only its proportions matter, boxes are mapped linearly to the others.
    """

    source_size: tuple[int, int]
    canvas_size: tuple[int, int]
    sampling_size: tuple[int, int]

    def snap(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map boxes ``[..., 4]`` from sampling to canvas pixels, snapped to whole pixels (at least 1x1).

        Returns:
            ``(canvas_boxes int64 [..., 4], source_boxes float32 [..., 4])``: the integer canvas region stage 2
            cuts, and exactly that region in source pixels.
        """
        (sh, sw), (ch, cw), (oh, ow) = self.sampling_size, self.canvas_size, self.source_size
        boxes = np.asarray(boxes, dtype=np.float64)
        scale = np.array([cw / sw, ch / sh, cw / sw, ch / sh])
        canvas = np.floor(boxes * scale + 0.5).astype(np.int64)
        x0 = np.clip(canvas[..., 0], 0, cw - 1)
        y0 = np.clip(canvas[..., 1], 0, ch - 1)
        x1 = np.clip(canvas[..., 2], x0 + 1, cw)
        y1 = np.clip(canvas[..., 3], y0 + 1, ch)
        canvas = np.stack([x0, y0, x1, y1], axis=-1)
        source = canvas * np.array([ow / cw, oh / ch, ow / cw, oh / ch])
        return canvas, source.astype(np.float32)
