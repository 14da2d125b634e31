"""View plans: the :class:`ViewRecipe` base class, the :class:`ViewPlan` a recipe draws for one video, and stage 1.

Self-supervised video methods train on several *views* of each video: clips at chosen frame indices, each with
its own crop, flip and colour augmentation. The view engine splits that work in two, because decoding is per
video (CPU, DataLoader workers) while pixel work is best done batched on whatever device the batch lives on:

* **Stage 1** (:func:`sample_views`, here, per video, CPU): a :class:`ViewRecipe` draws every random parameter
  from a per-sample generator (:func:`~hf_vssl.data.sampling.sample_rng`): the frame indices of each view, a
  crop box, a flip and colour parameters. The union of the frames that the views need is decoded **once**
  (views that share frames share slots), at a *canvas* size that is the video's own size by default (no
  resampling at decode; see :class:`ViewRecipe` for the canvas policy). The result is a dict of numpy arrays;
  :func:`~hf_vssl.data.batches.collate_views` stacks those into tensors.
* **Stage 2** (:func:`~hf_vssl.data.rendering.apply_views`, per batch, any device): crop, resize, flip, colour
  and normalisation as tensor operations (:mod:`hf_vssl.data.rendering`, :mod:`hf_vssl.data.color`).
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import torch

from ..video_decoding import VideoDecodeError, VideoInfo, VideoReader
from .color import COLOR_MODES, IMAGENET_MEAN, IMAGENET_STD
from .rendering import apply_views
from .sampling import ColorSpec, CropSpec, FrameGeometry

__all__ = ["VideoTooShortError", "ViewPlan", "ViewRecipe", "sample_views"]


class VideoTooShortError(ValueError):
    """A recipe cannot draw its views from a video this short (stage 1 reports it as a skipped video)."""


@dataclass
class ViewPlan:
    """Everything a recipe decided for one video (stage 1), before any pixel is decoded.

    Attributes:
        decode_indices: ``int64 [S]`` source frames to decode (a fixed count per recipe so batches stack).
        frame_slots: ``int64 [V, T]`` position in ``decode_indices`` of every frame of every view.
        canvas_boxes: ``int64 [V, 4]`` crop boxes in canvas pixels (from :meth:`~hf_vssl.data.sampling.FrameGeometry.snap`).
        crop_boxes: ``float32 [V, 4]`` the same boxes in source pixels.
        flips: ``bool [V]`` horizontal flips.
        color: photometric parameters from :func:`~hf_vssl.data.sampling.sample_color_params` (``[V, T]`` each).
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
        color_mode: ``"fused"`` or ``"sequential"`` colour jitter (see :mod:`hf_vssl.data.color`).
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
        parameters of :func:`~hf_vssl.data.sampling.sample_color_params`, ``video_size`` ``[2]`` (source ``H, W``),
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
