"""View engine: sample the views of a video (stage 1) and render a batch of them (stage 2).

Self-supervised video methods train on several *views* of each video: clips at chosen frame indices, each with
its own crop, flip and colour augmentation. The engine splits that work in two, because decoding is per video
(CPU, DataLoader workers) while pixel work is best done batched on whatever device the batch lives on:

* **Stage 1** (:func:`sample_views`, per video, CPU): a :class:`ViewRecipe` draws every random parameter from a
  per-sample generator (:func:`sample_rng`): the frame indices of each view, a crop box, a flip and colour
  parameters. The union of the frames that the views need is decoded **once** (views that share frames share
  slots), at a *canvas* size that is the video's own size by default (no resampling at decode; see
  :class:`ViewRecipe` for the canvas policy). The result is a dict of numpy arrays; :func:`collate_views` stacks
  those into tensors.
* **Stage 2** (:func:`apply_views`, per batch, any device): crop + resize + flip (one resize call per view, all
  its ``T`` frames at once: a view shares one box), colour jitter, gray, blur and normalisation as tensor
  operations on ``[B*V*T, C, H, W]``; no per-frame Python. On GPUs the colour stage is one batched pass; on CPU it
  runs view by view while the view's frames are still in cache (the work is memory-bound there). The output
  holds ``pixel_values`` ``[B, V, T, C, H, W]`` and every parameter that produced it.

Geometry conventions (used by every recorded box, and by ctrlaug's tubes):

* Boxes are ``(x0, y0, x1, y1)`` in pixel-edge coordinates: pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``,
  so a box covers ``[x0, x1) x [y0, y1)`` and the full frame is ``(0, 0, W, H)``. ``crop_boxes`` are in
  **source** pixels (the video as stored, display orientation); the box actually cut from the canvas is the
  same region snapped to whole canvas pixels, and ``crop_boxes`` records that snapped region exactly.
* A flipped view is mirrored horizontally *after* cropping; its box is not mirrored.
* Time: source frame ``f`` covers ``[f, f+1)`` in frame units.

Colour jitter has two implementations (``color_mode`` of the recipe), both drawing the same parameters:

* ``"sequential"``: torchvision's tensor semantics: brightness ``x*b``, contrast ``c*x + (1-c)*mean(gray(x))``,
  saturation ``s*x + (1-s)*gray(x)``, hue shift in HSV, each followed by a clamp to ``[0, 1]``, in the drawn
  order; gray = ITU-R 601 luma ``(0.2989, 0.587, 0.114)`` or one RGB channel repeated.
* ``"fused"`` (default): the same chain without the intermediate clamps and with the hue shift done as a
  rotation in YIQ space (as NVIDIA DALI's ``ColorTwist``), so the whole chain (gray included) is one affine
  colour map per frame, composed in the drawn order; one clamp to ``[0, 1]`` at the end. It costs a few tensor
  passes instead of a few dozen, which is what lets CPU pipelines keep up with decoding (see
  ``benchmarks/data_throughput.py``). Without clamping and with zero hue both modes agree exactly.
"""

from __future__ import annotations

import difflib
import hashlib
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..video_decoding import VideoDecodeError, VideoInfo, VideoReader

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ColorSpec",
    "CropSpec",
    "FrameGeometry",
    "SharedBatch",
    "VideoTooShortError",
    "ViewPlan",
    "ViewRecipe",
    "apply_fused_color",
    "box_coverage",
    "apply_views",
    "collate_views",
    "color_matrices",
    "empty_batch",
    "fused_color_maps",
    "fused_color_workspace",
    "gaussian_blur",
    "render_color",
    "resample_views",
    "sample_color_params",
    "sample_crop_box",
    "sample_rng",
    "sample_views",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ITU-R 601-2 luma, as torchvision's rgb_to_grayscale
LUMA_WEIGHTS = (0.2989, 0.587, 0.114)
# RGB -> YIQ (NTSC); the Y row is luma, rotations in the I-Q plane shift hue and keep luma
_RGB_TO_YIQ = (
    (0.299, 0.587, 0.114),
    (0.595716, -0.274453, -0.321263),
    (0.211456, -0.522591, 0.311135),
)

# jitter operation ids used in `jitter_order`
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3
COLOR_MODES = ("fused", "sequential")
GRAY_MODES = ("luma", "channel")

# per-view parameter arrays produced by `sample_color_params`, all [V, T]
COLOR_KEYS = ("brightness", "contrast", "saturation", "hue", "gray", "gray_channel", "blur_sigma")
# stage-1 entries that stage 2 consumes and does not pass on
STAGE1_ONLY_KEYS = ("frames", "frame_slots", "canvas_boxes")


class VideoTooShortError(ValueError):
    """A recipe cannot draw its views from a video this short (stage 1 reports it as a skipped video)."""


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
# Canvas geometry and view plans
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


@dataclass
class ViewPlan:
    """Everything a recipe decided for one video (stage 1), before any pixel is decoded.

    Attributes:
        decode_indices: ``int64 [S]`` source frames to decode (a fixed count per recipe so batches stack).
        frame_slots: ``int64 [V, T]`` position in ``decode_indices`` of every frame of every view.
        canvas_boxes: ``int64 [V, 4]`` crop boxes in canvas pixels (from :meth:`FrameGeometry.snap`).
        crop_boxes: ``float32 [V, 4]`` the same boxes in source pixels.
        flips: ``bool [V]`` horizontal flips.
        color: photometric parameters from :func:`sample_color_params` (``[V, T]`` each).
        extras: recipe-specific arrays passed through to the batch (e.g. ctrlaug's ``tubes``).
    """

    decode_indices: np.ndarray
    frame_slots: np.ndarray
    canvas_boxes: np.ndarray
    crop_boxes: np.ndarray
    flips: np.ndarray
    color: dict[str, np.ndarray]
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def frame_indices(self) -> np.ndarray:
        """``int64 [V, T]`` source frame of every output frame."""
        return self.decode_indices[self.frame_slots]


@dataclass(kw_only=True)
class ViewRecipe:
    """Base class of view recipes: small declarative descriptions of a method's views.

    A subclass adds its own fields and implements :meth:`plan` (and :attr:`min_num_frames`); everything else is
    shared. The fields here control decoding and stage 2.

    Args:
        output_size: ``(H, W)`` of every output frame.
        mean, std: per-channel normalisation applied last (ImageNet by default).
        color_mode: ``"fused"`` or ``"sequential"`` colour jitter (see the module docstring).
        gray_before_jitter: apply random gray before colour jitter (MLFO's code) instead of after (MoCo/SimCLR).
        antialias: antialiased bilinear resizing (as PIL); False = plain bilinear.
        canvas_size: decode every frame at this fixed ``(H, W)`` (resized inside FFmpeg's swscale). ``None``
            (default) keeps each video's own size, which costs nothing at decode time and is exact when the data
            were prepared at the training resolution; a batch of differently sized videos is zero-padded to a
            common canvas (crops never reach the padding).
        max_canvas_short_side: with ``canvas_size=None``, videos whose short side exceeds this are downscaled
            at decode (aspect kept) so that e.g. raw 1080p videos do not flood memory. ``None``: never.
    """

    output_size: tuple[int, int] = (112, 112)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    color_mode: str = "fused"
    gray_before_jitter: bool = False
    antialias: bool = True
    canvas_size: tuple[int, int] | None = None
    max_canvas_short_side: int | None = 256

    # names of the views along the V axis, in order (set by subclasses)
    view_names: ClassVar[tuple[str, ...]] = ()
    # batch entries a pretraining model needs (the training loop may filter the batch with it)
    model_input_names: ClassVar[tuple[str, ...]] = ("pixel_values",)

    def __post_init__(self):
        if self.color_mode not in COLOR_MODES:
            raise ValueError(f"color_mode must be one of {COLOR_MODES}, got {self.color_mode!r}")
        if len(self.output_size) != 2 or min(self.output_size) < 1:
            raise ValueError(f"output_size must be (height, width) >= 1, got {self.output_size}")
        if self.canvas_size is not None and (len(self.canvas_size) != 2 or min(self.canvas_size) < 1):
            raise ValueError(f"canvas_size must be None or (height, width) >= 1, got {self.canvas_size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean/std need 3 channels and std > 0, got {self.mean} / {self.std}")

    # ---- to be provided by subclasses --------------------------------------------------------------------
    @property
    def min_num_frames(self) -> int:
        """Shortest video (in frames) this recipe can use; shorter ones are skipped as bad input."""
        return 1

    def plan(self, info: VideoInfo, geometry: FrameGeometry, rng: np.random.Generator) -> ViewPlan:
        """Draw the views of one video; raise :meth:`too_short` if the video cannot supply them."""
        raise NotImplementedError

    def sampling_size(self, info: VideoInfo) -> tuple[int, int]:
        """``(H, W)`` of the frame in which crop boxes are drawn; the source frame unless overridden."""
        return info.height, info.width

    # ---- shared ------------------------------------------------------------------------------------------
    def canvas_for(self, info: VideoInfo) -> tuple[int, int]:
        """``(H, W)`` at which this recipe decodes a video of ``info``'s size."""
        if self.canvas_size is not None:
            return int(self.canvas_size[0]), int(self.canvas_size[1])
        short = min(info.height, info.width)
        if self.max_canvas_short_side and short > self.max_canvas_short_side:
            scale = self.max_canvas_short_side / short
            return max(1, round(info.height * scale)), max(1, round(info.width * scale))
        return info.height, info.width

    def geometry_for(self, info: VideoInfo) -> FrameGeometry:
        return FrameGeometry((info.height, info.width), self.canvas_for(info), self.sampling_size(info))

    def too_short(self, info: VideoInfo, need: int | None = None) -> VideoTooShortError:
        """The error :meth:`plan` raises for a video it cannot use (stage 1 turns it into a skip)."""
        need = self.min_num_frames if need is None else need
        return VideoTooShortError(f"{info.num_frames} frames, {type(self).__name__} needs at least {need}")

    def apply(self, batch: dict[str, Any], device: torch.device | str | None = None) -> dict[str, Any]:
        """Stage 2 on a collated batch: shorthand for ``apply_views(batch, self, device=device)``."""
        return apply_views(batch, self, device=device)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data description of the recipe (for logs and resolved configs)."""
        return {"recipe": type(self).__name__, **asdict(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ViewRecipe:
        """The recipe from plain data (a YAML config's ``recipe`` mapping): lists become tuples, mappings become
        the ``CropSpec`` / ``ColorSpec`` their field holds; an unknown key is an error that suggests a name."""
        known = {f.name: f for f in fields(cls)}
        kwargs = {}
        for key, value in values.items():
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"{cls.__name__} has no field {key!r}{hint}")
            spec = next((s for s in (CropSpec, ColorSpec) if s.__name__ in str(known[key].type)), None)
            if isinstance(value, dict) and spec is not None:
                value = spec(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def from_config(cls, config, **overrides) -> ViewRecipe:
        """The recipe sized like a model config (``num_frames`` per clip, ``image_size`` crops), with overrides."""
        sized: dict[str, Any] = {"output_size": (config.image_size, config.image_size)}
        if "clip_length" in {f.name for f in fields(cls)}:
            sized["clip_length"] = config.num_frames
        return cls.from_dict({**sized, **overrides})


# --------------------------------------------------------------------------------------------------------------
# Stage 1: one video -> one sample
# --------------------------------------------------------------------------------------------------------------
def sample_views(reader: VideoReader, recipe: ViewRecipe, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Stage 1 for one opened video: plan the views, decode their frames once, record every parameter.

    Returns:
        A dict of numpy arrays (``V`` views of ``T`` frames, ``S`` decoded frames):
        ``frames`` ``uint8 [S, Hc, Wc, 3]``, ``frame_slots`` ``[V, T]``, ``frame_indices`` ``[V, T]``,
        ``canvas_boxes`` ``[V, 4]``, ``crop_boxes`` ``[V, 4]`` (source pixels), ``flips`` ``[V]``, the colour
        parameters of :func:`sample_color_params`, ``video_size`` ``[2]`` (source ``H, W``),
        ``num_video_frames`` (scalar), plus the recipe's extras.

    Raises:
        VideoDecodeError: the video is truncated, too short for the recipe, or cannot be decoded.
    """
    info = reader.info
    decodable = getattr(reader, "decodable_frames", info.num_frames)
    if decodable < info.num_frames:  # never train on what is left of a cut-off file
        raise VideoDecodeError(reader.name, "truncated", f"{decodable} of {info.num_frames} frames decodable")
    try:
        if info.num_frames < recipe.min_num_frames:
            raise recipe.too_short(info)
        geometry = recipe.geometry_for(info)
        plan = recipe.plan(info, geometry, rng)
    except VideoTooShortError as err:
        raise VideoDecodeError(reader.name, "too short", str(err)) from None
    size = None if geometry.canvas_size == geometry.source_size else geometry.canvas_size
    frames = reader.get_frames(plan.decode_indices, size=size)
    sample = {
        "frames": frames,
        "frame_slots": plan.frame_slots.astype(np.int64),
        "frame_indices": plan.frame_indices.astype(np.int64),
        "canvas_boxes": plan.canvas_boxes.astype(np.int64),
        "crop_boxes": plan.crop_boxes.astype(np.float32),
        "flips": plan.flips.astype(np.bool_),
        **plan.color,
        "video_size": np.array([info.height, info.width], dtype=np.int64),
        "num_video_frames": np.array(info.num_frames, dtype=np.int64),
    }
    for name, value in plan.extras.items():
        sample[name] = np.asarray(value)
    return sample


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


# --------------------------------------------------------------------------------------------------------------
# Stage 2: batch -> pixels
# --------------------------------------------------------------------------------------------------------------
def apply_views(
    batch: dict[str, Any],
    recipe: ViewRecipe,
    out: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Stage 2: render every view of a collated stage-1 batch on the batch's device (or on ``device``).

    Args:
        batch: output of :func:`collate_views` (tensors on any device); ``frames`` ``uint8 [B, S, Hc, Wc, 3]``.
            A batch that already holds ``pixel_values`` (rendered in the workers) is returned unchanged.
        recipe: supplies ``output_size``, ``mean``/``std``, ``color_mode``, ``gray_before_jitter``,
            ``antialias``.
        out: optional ``float32 [B, V, T, 3, H, W]`` buffer for ``pixel_values`` (e.g. in shared memory).
        device: move the batch's tensors there first (asynchronously when they are pinned).

    Returns:
        The batch without ``frames``/``frame_slots``/``canvas_boxes`` and with ``pixel_values``
        ``float32 [B, V, T, 3, H, W]`` (normalised), next to every recorded parameter: ``frame_indices``
        ``[B, V, T]``, ``crop_boxes`` ``[B, V, 4]`` (source pixels), ``flips`` ``[B, V]``, colour parameters
        ``[B, V, T]`` (``jitter_order`` ``[B, V, T, 4]``), ``labels``, recipe extras.
    """
    if device is not None:
        batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    if "pixel_values" in batch:
        return batch
    frames, slots = batch["frames"], batch["frame_slots"]
    B, V, T = slots.shape
    size = (int(recipe.output_size[0]), int(recipe.output_size[1]))
    flat = {
        name: batch[name].reshape(B * V * T, *batch[name].shape[3:]) for name in (*COLOR_KEYS, "jitter_order")
    }
    if out is None:
        pixels = torch.empty((B * V * T, 3, *size), dtype=torch.float32, device=frames.device)
    else:
        if tuple(out.shape) != (B, V, T, 3, *size) or out.dtype != torch.float32:
            raise ValueError(f"out must be float32 {(B, V, T, 3, *size)}, got {out.dtype} {tuple(out.shape)}")
        pixels = out.view(B * V * T, 3, *size)
    geometry = (frames, slots, batch["canvas_boxes"], batch["flips"], size, recipe.antialias)
    if recipe.color_mode == "fused" and frames.device.type == "cpu":
        # Cache blocking: colour each view while its resampled frames are still in cache. The whole chain is
        # memory-bound on CPU, and one view (T frames) fits in L2 where a batch does not.
        maps = fused_color_maps(flat, recipe.gray_before_jitter, recipe.mean, recipe.std)
        workspace = fused_color_workspace(T, size, frames.device)
        for start, clip in _resampled_views(*geometry):
            end = start + T
            apply_fused_color(
                clip,
                *(m[start:end] for m in maps[:2]),
                *maps[2:],
                recipe.mean,
                recipe.std,
                out=pixels[start:end],
                workspace=workspace,
            )
    else:  # one batched pass (GPUs, and the sequential colour mode)
        clips = resample_views(*geometry)
        pixels.copy_(
            render_color(clips, flat, recipe.color_mode, recipe.gray_before_jitter, recipe.mean, recipe.std)
        )
    if bool((flat["blur_sigma"] > 0).any()):
        gaussian_blur(pixels, flat["blur_sigma"], out=pixels)
    rendered = {name: value for name, value in batch.items() if name not in STAGE1_ONLY_KEYS}
    rendered["pixel_values"] = pixels.view(B, V, T, 3, *size)
    return rendered


def _resampled_views(
    frames: torch.Tensor,
    frame_slots: torch.Tensor,
    canvas_boxes: torch.Tensor,
    flips: torch.Tensor,
    size: tuple[int, int],
    antialias: bool,
    integer: bool | None = None,
):
    """Yield ``(first flat frame index, [T, 3, H, W] clip in [0, 255])`` for every view, in ``B, V`` order.

    All frames of a view share one box, so each view is a single resize of a ``[T, 3, h, w]`` slice of the
    canvas (only the crop region is gathered). ``integer`` (default: on CPU) resizes ``uint8`` frames with
    PyTorch's vectorised antialiased kernel (fixed-point weights, results rounded; by far the fastest CPU
    path); otherwise the resize runs in ``float32`` (GPUs).
    """
    B, V, T = frame_slots.shape
    integer = frames.device.type == "cpu" if integer is None else integer
    boxes, flip_list = canvas_boxes.tolist(), flips.tolist()  # one host sync for the whole batch
    for b in range(B):
        for v in range(V):
            x0, y0, x1, y1 = boxes[b][v]
            clip = frames[b, :, y0:y1, x0:x1].index_select(0, frame_slots[b, v]).permute(0, 3, 1, 2)
            if not integer:
                clip = clip.float()
            if tuple(clip.shape[-2:]) != size:
                clip = F.interpolate(
                    clip, size=size, mode="bilinear", antialias=antialias, align_corners=False
                )
            yield (b * V + v) * T, clip.flip(-1) if flip_list[b][v] else clip


def resample_views(
    frames: torch.Tensor,
    frame_slots: torch.Tensor,
    canvas_boxes: torch.Tensor,
    flips: torch.Tensor,
    size: tuple[int, int],
    antialias: bool = True,
    integer: bool | None = None,
) -> torch.Tensor:
    """Crop every view's box from its frames, resize it to ``size`` and mirror flipped views.

    Args:
        frames: ``uint8 [B, S, Hc, Wc, 3]`` decoded canvases.
        frame_slots: ``int64 [B, V, T]`` index into ``S`` of every output frame.
        canvas_boxes: ``int64 [B, V, 4]`` integer boxes ``(x0, y0, x1, y1)`` in canvas pixels.
        flips: ``bool [B, V]``.
        size: output ``(H, W)``.
        integer: resize in ``uint8`` (default on CPU) or in ``float32`` (default elsewhere).

    Returns:
        ``[B*V*T, 3, H, W]`` with values in ``[0, 255]``, ``uint8`` or ``float32`` as resized.
    """
    B, V, T = frame_slots.shape
    integer = frames.device.type == "cpu" if integer is None else integer
    out = torch.empty(
        (B * V * T, 3, *size), dtype=torch.uint8 if integer else torch.float32, device=frames.device
    )
    for start, clip in _resampled_views(frames, frame_slots, canvas_boxes, flips, size, antialias, integer):
        out[start : start + T] = clip
    return out


def render_color(
    clips: torch.Tensor,
    params: dict[str, torch.Tensor],
    mode: str = "fused",
    gray_before_jitter: bool = False,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """Colour jitter, gray and normalisation of ``N`` frames (blur is separate: :func:`gaussian_blur`).

    Args:
        clips: ``[N, 3, H, W]`` values in ``[0, 255]`` (``uint8`` or float).
        params: ``brightness``, ``contrast``, ``saturation``, ``hue``, ``gray``, ``gray_channel`` ``[N]`` and
            ``jitter_order`` ``[N, 4]``.
        mode: ``"fused"`` or ``"sequential"`` (see the module docstring).

    Returns:
        ``float32 [N, 3, H, W]``: ``(clamp(color(x / 255), 0, 1) - mean) / std``.
    """
    if mode not in COLOR_MODES:
        raise ValueError(f"mode must be one of {COLOR_MODES}, got {mode!r}")
    if mode == "fused":
        maps = fused_color_maps(params, gray_before_jitter, mean, std)
        return apply_fused_color(clips, *maps, mean, std)
    N, C, H, W = clips.shape
    x = clips.reshape(N, C, H * W).float() / 255.0
    out = _color_sequential(x, params, gray_before_jitter)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=x.device)[None, :, None]
    std_t = torch.tensor(std, dtype=torch.float32, device=x.device)[None, :, None]
    return out.sub_(mean_t).div_(std_t).view(N, C, H, W)


def fused_color_maps(
    params: dict[str, torch.Tensor],
    gray_before_jitter: bool,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`color_matrices` rescaled to act on ``[0, 255]`` input and produce normalised output.

    Returns:
        ``(M [N, 3, 3], Q [N, 3, 3], offset [3])`` with
        ``normalised = M @ x + Q @ mean_rgb(x) + offset`` for ``x`` in ``[0, 255]``.
    """
    matrix, mean_map = color_matrices(params, gray_before_jitter)
    device = matrix.device
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device)
    std_t = torch.tensor(std, dtype=torch.float32, device=device)
    scale = (1.0 / (255.0 * std_t))[None, :, None]
    return matrix * scale, mean_map * scale, -mean_t / std_t


def apply_fused_color(
    clips: torch.Tensor,
    matrix: torch.Tensor,
    mean_map: torch.Tensor,
    offset: torch.Tensor,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    out: torch.Tensor | None = None,
    workspace: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply the maps of :func:`fused_color_maps` to ``clips`` ``[n, 3, H, W]`` (``[0, 255]``, any dtype).

    The result is clamped to the normalised image of ``[0, 1]`` and written to ``out`` (``float32 [n, 3, H, W]``)
    when given. ``workspace`` (from :func:`fused_color_workspace`) can be reused across calls of equal shape.
    """
    n, C, H, W = clips.shape
    if workspace is None:
        workspace = fused_color_workspace(n, (H, W), clips.device)
    # [x; 1]: the bias becomes a fourth column of the colour matrix, so one bmm applies the whole affine map
    x = workspace[:n]
    x[:, :C].copy_(clips.reshape(n, C, H * W))  # dtype conversion (and channels-last -> planar) in one pass
    bias = torch.bmm(mean_map, x[:, :C].mean(dim=2, keepdim=True)).add_(offset[None, :, None])  # [n, 3, 1]
    if out is None:
        out = torch.empty((n, C, H, W), dtype=torch.float32, device=clips.device)
    flat_out = out.view(n, C, H * W)
    torch.bmm(torch.cat([matrix, bias], dim=2), x, out=flat_out)
    for c in range(C):
        flat_out[:, c].clamp_(-mean[c] / std[c], (1.0 - mean[c]) / std[c])
    return out


def fused_color_workspace(n: int, size: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Scratch buffer ``float32 [n, 4, H*W]`` for :func:`apply_fused_color` (its last row is ones)."""
    workspace = torch.empty((n, 4, size[0] * size[1]), dtype=torch.float32, device=device)
    workspace[:, 3] = 1.0
    return workspace


def _luma(device: torch.device) -> torch.Tensor:
    return torch.tensor(LUMA_WEIGHTS, dtype=torch.float32, device=device)


def _gray_matrices(gray: torch.Tensor, gray_channel: torch.Tensor) -> torch.Tensor:
    """``[N, 3, 3]`` maps that turn a frame gray (identity where ``gray`` is False)."""
    n, device = gray.shape[0], gray.device
    eye = torch.eye(3, device=device).expand(n, 3, 3)
    channel_rows = F.one_hot(gray_channel.clamp(min=0), 3).float()  # [N, 3]
    rows = torch.where((gray_channel >= 0)[:, None], channel_rows, _luma(device).expand(n, 3))
    return torch.where(gray[:, None, None], rows[:, None, :].expand(n, 3, 3), eye)


def _hue_matrices(hue: torch.Tensor) -> torch.Tensor:
    """``[N, 3, 3]`` YIQ rotations; a positive shift turns red towards yellow, as in HSV."""
    to_yiq = torch.tensor(_RGB_TO_YIQ, dtype=torch.float32, device=hue.device)
    theta = -2.0 * math.pi * hue.float()
    cos, sin = torch.cos(theta), torch.sin(theta)
    rotation = torch.zeros(hue.shape[0], 3, 3, device=hue.device)
    rotation[:, 0, 0] = 1.0
    rotation[:, 1, 1], rotation[:, 1, 2] = cos, -sin
    rotation[:, 2, 1], rotation[:, 2, 2] = sin, cos
    return torch.linalg.inv(to_yiq) @ rotation @ to_yiq


def color_matrices(
    params: dict[str, torch.Tensor], gray_before_jitter: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused colour map of each frame on ``[0, 1]`` RGB, before the final clamp.

    Contrast blends with the mean luma of the frame as it is at that point of the chain, which is linear in the
    input frame's mean colour ``m`` (every step is linear), so the whole chain is ``y = M @ x + Q @ m``.

    Args:
        params: as :func:`render_color`.

    Returns:
        ``(M [N, 3, 3], Q [N, 3, 3])``.
    """
    gray = _gray_matrices(params["gray"], params["gray_channel"])
    n, device = gray.shape[0], gray.device
    eye = torch.eye(3, device=device)
    luma_rows = torch.ones(3, 1, device=device) * _luma(device)[None, :]  # every channel <- luma
    matrix, mean_map = eye.expand(n, 3, 3).clone(), torch.zeros(n, 3, 3, device=device)
    if gray_before_jitter:
        matrix, mean_map = gray @ matrix, gray @ mean_map
    b, c, s = (params[k].float()[:, None, None] for k in ("brightness", "contrast", "saturation"))
    op_matrices = {
        BRIGHTNESS: b * eye,
        CONTRAST: c * eye,
        SATURATION: s * eye + (1.0 - s) * luma_rows,
        HUE: _hue_matrices(params["hue"]),
    }
    order = params["jitter_order"]
    for step in range(4):
        op = order[:, step][:, None, None]
        step_matrix = eye.expand(n, 3, 3)
        for op_id, op_matrix in op_matrices.items():
            step_matrix = torch.where(op == op_id, op_matrix, step_matrix)
        # contrast: y = c x + (1 - c) luma(mean(x)), and mean(x) = (M + Q) m
        contrast_term = torch.where(op == CONTRAST, (1.0 - c) * (luma_rows @ (matrix + mean_map)), 0.0)
        matrix, mean_map = step_matrix @ matrix, step_matrix @ mean_map + contrast_term
    if not gray_before_jitter:
        matrix, mean_map = gray @ matrix, gray @ mean_map
    return matrix, mean_map


def _color_sequential(
    x: torch.Tensor, params: dict[str, torch.Tensor], gray_before_jitter: bool
) -> torch.Tensor:
    """torchvision-style jitter with a clamp after each operation; ``x`` ``[N, 3, P]`` in ``[0, 1]``."""
    gray = _gray_matrices(params["gray"], params["gray_channel"])
    luma = _luma(x.device)
    if gray_before_jitter:
        x = torch.bmm(gray, x)
    b, c, s, h = (params[k].float()[:, None, None] for k in ("brightness", "contrast", "saturation", "hue"))
    order = params["jitter_order"]
    for step in range(4):
        op = order[:, step][:, None, None]
        # brightness, contrast and saturation all read y = alpha*x + beta*gray(x) + gamma*mean(gray(x))
        alpha = torch.where(
            op == BRIGHTNESS, b, torch.where(op == CONTRAST, c, torch.where(op == SATURATION, s, 1.0))
        )
        beta = torch.where(op == SATURATION, 1.0 - s, 0.0)
        gamma = torch.where(op == CONTRAST, 1.0 - c, 0.0)
        luma_x = torch.einsum("c,ncp->np", luma, x).unsqueeze(1)  # [N, 1, P]
        x = (alpha * x + beta * luma_x + gamma * luma_x.mean(dim=2, keepdim=True)).clamp_(0.0, 1.0)
        hue_frames = torch.nonzero((op[:, 0, 0] == HUE) & (h[:, 0, 0] != 0)).squeeze(1)
        if hue_frames.numel():
            x[hue_frames] = adjust_hue(x[hue_frames], h[hue_frames, 0, 0])
    if not gray_before_jitter:
        x = torch.bmm(gray, x)
    return x


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Shift the HSV hue of ``x`` ``[N, 3, P]`` in ``[0, 1]`` by ``shift`` ``[N]`` (fractions of the circle)."""
    r, g, b = x.unbind(1)
    value, _ = x.max(dim=1)
    chroma = value - x.min(dim=1).values
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    rc, gc, bc = (value - r) / safe, (value - g) / safe, (value - b) / safe
    is_r = value == r
    is_g = (value == g) & ~is_r
    hue = torch.where(is_r, bc - gc, torch.where(is_g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.remainder(hue / 6.0 + shift[:, None], 1.0)
    # HSV -> RGB: channel n in (R, G, B) = V - C * clamp(min(k, 4 - k), 0, 1), k = (n + 6 h) mod 6, n = 5, 3, 1
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device)[None, :, None]
    k = torch.remainder(n + 6.0 * hue[:, None, :], 6.0)
    return value[:, None, :] - chroma[:, None, :] * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


def gaussian_blur(
    images: torch.Tensor, sigma: torch.Tensor | float, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Separable Gaussian blur with one ``sigma`` per image; reflect padding.

    The kernel radius is ``ceil(3 sigma)`` (at most the image side minus one), so an image's result does not
    depend on the other images of the batch. Each run of images with equal ``sigma`` (the frames of a view)
    is blurred with two matrix products by banded blur matrices that fold the reflection in: on CPUs that
    is two to three times as fast as a depthwise convolution, and it needs no padded copy.

    Args:
        images: ``float [N, C, H, W]``.
        sigma: ``[N]`` standard deviations in pixels, or one for all; ``0`` leaves an image as it is.
        out: optional output (may be ``images`` itself: the blur then runs in place).
    """
    N, C, H, W = images.shape
    if out is None:
        out = torch.empty_like(images)
    sigmas = [float(sigma)] * N if not torch.is_tensor(sigma) or sigma.dim() == 0 else sigma.tolist()
    start = 0
    while start < N:
        end = start + 1
        while end < N and sigmas[end] == sigmas[start]:
            end += 1
        if sigmas[start] > 0:
            rows = _blur_matrix(sigmas[start], H, images.device)
            cols = _blur_matrix(sigmas[start], W, images.device)
            torch.matmul(rows, torch.matmul(images[start:end], cols.T), out=out[start:end])
        elif out.data_ptr() != images.data_ptr():
            out[start:end] = images[start:end]
        start = end
    return out


def _blur_matrix(sigma: float, size: int, device: torch.device) -> torch.Tensor:
    """``[size, size]`` matrix ``K`` with ``K @ x`` = ``x`` blurred along its first axis (reflect padding)."""
    radius = min(math.ceil(3.0 * sigma), size - 1)
    taps = torch.arange(-radius, radius + 1, device=device)
    kernel = torch.exp(-0.5 * (taps.float() / sigma) ** 2)
    kernel /= kernel.sum()
    source = (torch.arange(size, device=device)[:, None] + taps[None, :]).abs()  # reflect at 0 ...
    source = torch.where(source > size - 1, 2 * (size - 1) - source, source)  # ... and at size - 1
    matrix = torch.zeros(size, size, device=device)
    return matrix.scatter_add_(1, source, kernel.expand(size, -1).contiguous())
