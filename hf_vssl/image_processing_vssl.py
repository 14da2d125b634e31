"""Image processor for hf_vssl video models, and the clip transform every hf_vssl processor shares.

A clip is one video as a tensor ``[T, C, H, W]``. The transform turns it into the ``pixel_values`` the models take,
exactly as the evaluation recipe (``hf_vssl.data.EvalViews``, which is built from these settings) renders the views
that measured a model card: each spatial crop of the frame resized by ``size`` (shorter side to
``size["shortest_edge"]``, or an exact ``height`` x ``width``) is cut in source pixels, snapped to whole pixels, and
resized alone to ``crop_size`` (bilinear, antialiased); then rescale to [0, 1] and normalise. Each step runs once per
crop over all frames (one ``F.interpolate``, one slice, one fused multiply-add), on CPU or on the clip's device.

:class:`VideoSSLImageProcessor` applies it to videos that are already decoded (lists of frames or arrays); it is
what ``AutoImageProcessor`` returns for hf_vssl checkpoints and what ``pipeline("video-classification")`` falls
back to. :class:`~.video_processing_vssl.VideoSSLVideoProcessor` adds decoding and frame sampling on top.

This module is shipped with pushed checkpoints as remote code: it imports only numpy, torch, PIL and
transformers, never hf_vssl.
"""

import copy
import numbers
from collections.abc import Callable, Sequence
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.processing_utils import Unpack
from transformers.utils import TensorType, is_vision_available, logging

if is_vision_available():
    import PIL.Image

logger = logging.get_logger(__name__)

# PIL resampling codes (what transformers stores in configs) -> F.interpolate modes. PIL's nearest samples pixel
# centres, which is torch's "nearest-exact".
_RESAMPLE_MODES = {0: "nearest-exact", 2: "bilinear", 3: "bicubic"}
_RESAMPLE_NAMES = {"nearest": 0, "nearest-exact": 0, "bilinear": 2, "bicubic": 3}
_CHANNEL_COUNTS = (1, 3, 4)
# Integer pixel types read as [0, 255] values; wider unsigned types (16-bit video) would be rescaled wrongly.
_PIXEL_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


class VideoSSLImagesKwargs(TypedDict, total=False):
    """Saved parameters of the hf_vssl processors; each may also be overridden per call."""

    do_convert_rgb: bool
    do_resize: bool
    size: dict[str, int] | int
    resample: int | str
    do_center_crop: bool
    crop_size: dict[str, int] | int
    spatial_crops: str
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    image_mean: float | Sequence[float]
    image_std: float | Sequence[float]


# ----------------------------------------------------------------------------------------------------------
# Parameter checking
# ----------------------------------------------------------------------------------------------------------
def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def normalize_size(size: dict[str, int] | int) -> dict[str, int]:
    """``size`` as ``{"shortest_edge": s}`` or ``{"height": h, "width": w}``; an int means a shortest edge."""
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        return {"shortest_edge": _positive_int("size", size)}
    if isinstance(size, dict) and set(size) == {"shortest_edge"}:
        return {"shortest_edge": _positive_int("size['shortest_edge']", size["shortest_edge"])}
    if isinstance(size, dict) and set(size) == {"height", "width"}:
        return {k: _positive_int(f"size['{k}']", size[k]) for k in ("height", "width")}
    raise ValueError(
        f'`size` must be an int, {{"shortest_edge": s}} or {{"height": h, "width": w}}; got {size!r}.'
    )


def normalize_crop_size(crop_size: dict[str, int] | int) -> dict[str, int]:
    """``crop_size`` as ``{"height": h, "width": w}``; an int means a square crop."""
    if isinstance(crop_size, numbers.Integral) and not isinstance(crop_size, bool):
        side = _positive_int("crop_size", crop_size)
        return {"height": side, "width": side}
    if isinstance(crop_size, dict) and set(crop_size) == {"height", "width"}:
        return {k: _positive_int(f"crop_size['{k}']", crop_size[k]) for k in ("height", "width")}
    raise ValueError(f'`crop_size` must be an int or {{"height": h, "width": w}}; got {crop_size!r}.')


def normalize_resample(resample: int | str) -> int:
    """A PIL resampling code (0 nearest, 2 bilinear, 3 bicubic) from a code, a PIL enum or a mode name."""
    if isinstance(resample, str):
        if resample.lower() not in _RESAMPLE_NAMES:
            raise ValueError(f"`resample` must be one of {sorted(_RESAMPLE_NAMES)}, got {resample!r}.")
        return _RESAMPLE_NAMES[resample.lower()]
    if isinstance(resample, numbers.Integral) and int(resample) in _RESAMPLE_MODES:
        return int(resample)
    raise ValueError(
        f"`resample` must be PIL's NEAREST (0), BILINEAR (2) or BICUBIC (3), or one of {sorted(_RESAMPLE_NAMES)}; "
        f"got {resample!r}."
    )


def _normalize_channel_stats(name: str, value: float | Sequence[float]) -> list[float]:
    values = [value] if isinstance(value, numbers.Real) else list(value)
    if not values or not all(isinstance(v, numbers.Real) for v in values):
        raise ValueError(f"`{name}` must be a number or a sequence of numbers, got {value!r}.")
    return [float(v) for v in values]


def check_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """Validate processor parameters and bring them to one canonical, JSON-serialisable form."""
    params = dict(params)
    if params.get("size") is not None:
        params["size"] = normalize_size(params["size"])
    if params.get("crop_size") is not None:
        params["crop_size"] = normalize_crop_size(params["crop_size"])
    if params.get("resample") is not None:
        params["resample"] = normalize_resample(params["resample"])
    for name in ("image_mean", "image_std"):
        if params.get(name) is not None:
            params[name] = _normalize_channel_stats(name, params[name])
    if params.get("image_std") is not None and any(s == 0 for s in params["image_std"]):
        raise ValueError(f"`image_std` must not contain zeros, got {params['image_std']}.")
    if params.get("rescale_factor") is not None:
        if isinstance(params["rescale_factor"], bool) or not isinstance(
            params["rescale_factor"], numbers.Real
        ):
            raise ValueError(f"`rescale_factor` must be a number, got {params['rescale_factor']!r}.")
        params["rescale_factor"] = float(params["rescale_factor"])
    for name in ("num_frames", "num_clips", "frame_stride"):
        if params.get(name) is not None:
            params[name] = _positive_int(name, params[name])
    if params.get("spatial_crops") is not None and params["spatial_crops"] not in SPATIAL_CROPS:
        raise ValueError(
            f"`spatial_crops` must be one of {tuple(SPATIAL_CROPS)}, got {params['spatial_crops']!r}."
        )
    return params


# ----------------------------------------------------------------------------------------------------------
# Inputs -> clips
# ----------------------------------------------------------------------------------------------------------
def _is_pil_image(obj: Any) -> bool:
    return is_vision_available() and isinstance(obj, PIL.Image.Image)


def _is_array(obj: Any) -> bool:
    return isinstance(obj, (np.ndarray, torch.Tensor))


def is_frame(obj: Any) -> bool:
    """A single image: a PIL image, or an array ``[H, W]``, ``[H, W, C]`` or ``[C, H, W]``."""
    return _is_pil_image(obj) or (_is_array(obj) and obj.ndim in (2, 3))


def _describe(obj: Any) -> str:
    if _is_array(obj):
        return f"{type(obj).__name__} of shape {tuple(obj.shape)}"
    return type(obj).__name__


def make_batched_videos(videos: Any, is_video_source: Callable[[Any], bool] | None = None) -> list[Any]:
    """Split processor input into a list with one entry per video.

    One video is an array or tensor ``[T, H, W, C]`` / ``[T, C, H, W]``, a list of frames (PIL images or
    ``[H, W, C]`` arrays), a single frame (a one-frame video), or anything ``is_video_source`` accepts (for
    example a file path). A batch is a list of those, or an array ``[B, T, ...]``.
    """
    is_video_source = is_video_source or (lambda obj: False)
    if is_video_source(videos) or is_frame(videos):
        return [videos]
    if _is_array(videos):
        if videos.ndim == 4:
            return [videos]
        if videos.ndim == 5:
            return list(videos)
        raise ValueError(
            f"Expected a video [T, H, W, C] / [T, C, H, W] or a batch of them, got {_describe(videos)}."
        )
    if isinstance(videos, (list, tuple)):
        if len(videos) == 0:
            raise ValueError("Got an empty list of videos.")
        if all(is_frame(item) for item in videos):
            return [list(videos)]  # the frames of one video
        batch = []
        for item in videos:
            if is_video_source(item) or (_is_array(item) and item.ndim == 4):
                batch.append(item)
            elif isinstance(item, (list, tuple)) and item and all(is_frame(frame) for frame in item):
                batch.append(list(item))
            else:
                raise ValueError(
                    "Each video in a batch must be a [T, H, W, C] / [T, C, H, W] array or tensor or a list of "
                    f"frames, got {_describe(item)}."
                )
        return batch
    raise ValueError(f"Unsupported video input of type {type(videos).__name__}.")


def _channel_axis(shape: Sequence[int], input_data_format: str | None) -> int:
    """Channel axis (1 or 3) of a 4D clip ``[T, ?, ?, ?]``."""
    if input_data_format is not None:
        layout = str(getattr(input_data_format, "value", input_data_format))
        if layout not in ("channels_first", "channels_last"):
            raise ValueError(
                f'`input_data_format` must be "channels_first" or "channels_last", got {layout!r}.'
            )
        return 1 if layout == "channels_first" else 3
    last, first = shape[3] in _CHANNEL_COUNTS, shape[1] in _CHANNEL_COUNTS
    if last and first:  # e.g. [T, 3, 4, 3]: prefer the axis holding exactly 3 channels, then decoders' HWC
        return 1 if shape[1] == 3 and shape[3] != 3 else 3
    if last or first:
        return 3 if last else 1
    raise ValueError(
        f"Cannot tell the channel axis of a video of shape {tuple(shape)}: expected 1, 3 or 4 channels first "
        '[T, C, H, W] or last [T, H, W, C]. Pass input_data_format="channels_first" / "channels_last".'
    )


def _frames_to_array(frames: list[Any]) -> np.ndarray | torch.Tensor:
    # Frames are stacked once into a clip; everything after this works on the whole clip.
    if all(torch.is_tensor(frame) for frame in frames):
        stacked = _stack(torch.stack, frames)
    else:
        arrays = [
            np.asarray(frame.convert("RGB")) if _is_pil_image(frame) else np.asarray(frame)
            for frame in frames
        ]
        stacked = _stack(np.stack, arrays)
    if stacked.ndim == 3:  # grayscale frames [H, W]
        stacked = stacked[..., None]
    return stacked


def _stack(stack: Callable, frames: list[Any]) -> Any:
    try:
        return stack(frames)
    except (ValueError, RuntimeError) as err:
        shapes = sorted({tuple(frame.shape) for frame in frames})
        raise ValueError(f"All frames of one video must have the same shape, got {shapes}.") from err


def clip_to_tensor(
    video: Any, input_data_format: str | None = None, do_convert_rgb: bool = True
) -> torch.Tensor:
    """One video (array, tensor or list of frames) as a tensor ``[T, C, H, W]`` with its original dtype.

    With ``do_convert_rgb``, grayscale clips are repeated to 3 channels and an alpha channel is dropped.
    """
    frames = [video] if is_frame(video) else video
    array = _frames_to_array(frames) if isinstance(frames, list) else frames
    if array.ndim != 4:
        raise ValueError(f"Expected a video [T, H, W, C] / [T, C, H, W], got {_describe(array)}.")
    clip = torch.from_numpy(np.ascontiguousarray(array)) if isinstance(array, np.ndarray) else array
    if clip.dtype not in _PIXEL_DTYPES and not clip.is_floating_point():
        raise ValueError(
            f"Unsupported video dtype {clip.dtype}: expected uint8 values in [0, 255] or floats."
        )
    if clip.shape[0] == 0:
        raise ValueError("Got a video with no frames.")
    if _channel_axis(clip.shape, None if isinstance(frames, list) else input_data_format) == 3:
        clip = clip.permute(0, 3, 1, 2)
    if do_convert_rgb and clip.shape[1] == 1:
        clip = clip.expand(-1, 3, -1, -1)
    elif do_convert_rgb and clip.shape[1] == 4:
        clip = clip[:, :3]
    return clip


# ----------------------------------------------------------------------------------------------------------
# The clip transform (shared by every hf_vssl processor, and by the evaluation recipe `hf_vssl.data.EvalViews`)
# ----------------------------------------------------------------------------------------------------------
# Spatial views per clip: "center" crop; "three" crops along the long side (start, centre, end); "ten": the four
# corners and the centre, each also mirrored.
SPATIAL_CROPS = {"center": 1, "three": 3, "ten": 10}


def resize_output_size(height: int, width: int, size: dict[str, int]) -> tuple[int, int]:
    """Output ``(height, width)`` for ``size`` (``shortest_edge`` keeps the aspect ratio, like transformers)."""
    if "shortest_edge" in size:
        short, long = (height, width) if height <= width else (width, height)
        new_short, new_long = size["shortest_edge"], int(size["shortest_edge"] * long / short)
        return (new_short, new_long) if height <= width else (new_long, new_short)
    return size["height"], size["width"]


def crop_boxes(
    height: int,
    width: int,
    crop_height: float,
    crop_width: float,
    spatial_crops: str = "center",
) -> tuple[np.ndarray, np.ndarray]:
    """The spatial crops of a ``height x width`` frame, as boxes of ``crop_height x crop_width`` source pixels.

    Boxes are ``(x0, y0, x1, y1)`` in pixel-edge coordinates (pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``).

    Returns:
        ``(boxes float64 [n, 4], flips bool [n])``, ``n = SPATIAL_CROPS[spatial_crops]``.
    """
    if spatial_crops not in SPATIAL_CROPS:
        raise ValueError(f"`spatial_crops` must be one of {tuple(SPATIAL_CROPS)}, got {spatial_crops!r}.")
    h, w = crop_height, crop_width
    cx, cy = (width - w) / 2, (height - h) / 2
    if spatial_crops == "center":
        corners = [(cx, cy)]
    elif spatial_crops == "three":
        corners = (
            [(0, cy), (cx, cy), (width - w, cy)] if width >= height else [(cx, 0), (cx, cy), (cx, height - h)]
        )
    else:
        five = [(0, 0), (width - w, 0), (0, height - h), (width - w, height - h), (cx, cy)]
        corners = five + five
    boxes = np.array([[x, y, x + w, y + h] for x, y in corners], dtype=np.float64)
    flips = np.zeros(len(corners), dtype=bool)
    if spatial_crops == "ten":
        flips[5:] = True
    return boxes, flips


def snap_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boxes ``[..., 4]`` rounded to whole pixels inside a ``height x width`` frame, at least 1x1: ``int64``."""
    snapped = np.floor(np.asarray(boxes, dtype=np.float64) + 0.5).astype(np.int64)
    x0 = np.clip(snapped[..., 0], 0, width - 1)
    y0 = np.clip(snapped[..., 1], 0, height - 1)
    x1 = np.clip(snapped[..., 2], x0 + 1, width)
    y1 = np.clip(snapped[..., 3], y0 + 1, height)
    return np.stack([x0, y0, x1, y1], axis=-1)


def view_boxes(
    height: int,
    width: int,
    *,
    do_resize: bool,
    size: dict[str, int],
    do_center_crop: bool,
    crop_size: dict[str, int],
    spatial_crops: str,
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Where the views of a ``height x width`` clip come from: ``(boxes int64 [n, 4], flips [n], (h, w))``.

    A view is its box, cut in source pixels and resized to ``(h, w)``: the crop ``crop_size`` of the frame
    resized by ``size``, without resizing the whole frame (with ``do_center_crop=False``, the whole frame).
    """
    out_height, out_width = resize_output_size(height, width, size) if do_resize else (height, width)
    if not do_center_crop:
        return (
            np.array([[0, 0, width, height]], dtype=np.int64),
            np.zeros(1, dtype=bool),
            (out_height, out_width),
        )
    if do_resize and "shortest_edge" in size:  # one scale for both axes, the exact one
        scale_y = scale_x = size["shortest_edge"] / min(height, width)
    else:
        scale_y, scale_x = out_height / height, out_width / width
    crop_height, crop_width = crop_size["height"], crop_size["width"]
    boxes, flips = crop_boxes(height, width, crop_height / scale_y, crop_width / scale_x, spatial_crops)
    return snap_boxes(boxes, height, width), flips, (crop_height, crop_width)


def resize_clip(clip: torch.Tensor, out_size: tuple[int, int], resample: int = 2) -> torch.Tensor:
    """Resize every frame of a clip ``[T, C, H, W]`` in one call -> ``[T, C, h, w]``.

    Bilinear and bicubic use antialiasing, which only changes anything when shrinking: it averages over the
    source pixels each output pixel covers (as PIL does), instead of aliasing fine texture into the result.
    ``uint8`` clips stay ``uint8`` (PyTorch's fixed-point kernel on CPU, rounded, as the data engine renders
    views there); other clips are resized in ``float32``.
    """
    if tuple(out_size) == tuple(clip.shape[-2:]):
        return clip
    mode = _RESAMPLE_MODES[resample]
    extra = {"antialias": True, "align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(clip, size=tuple(out_size), mode=mode, **extra)


def rescale_and_normalize_clip(
    clip: torch.Tensor,
    do_rescale: bool,
    rescale_factor: float,
    do_normalize: bool,
    image_mean: Sequence[float],
    image_std: Sequence[float],
) -> torch.Tensor:
    """``(clip * rescale_factor - mean) / std`` per channel on ``[..., C, H, W]``, as one fused multiply-add."""
    num_channels = clip.shape[-3]
    scale = torch.full(
        (num_channels,), rescale_factor if do_rescale else 1.0, dtype=clip.dtype, device=clip.device
    )
    shift = torch.zeros(num_channels, dtype=clip.dtype, device=clip.device)
    if do_normalize:
        for name, stats in (("image_mean", image_mean), ("image_std", image_std)):
            if len(stats) not in (1, num_channels):
                raise ValueError(
                    f"`{name}` has {len(stats)} values but the video has {num_channels} channels."
                )
        mean = torch.as_tensor(image_mean, dtype=clip.dtype, device=clip.device).expand(num_channels)
        std = torch.as_tensor(image_std, dtype=clip.dtype, device=clip.device).expand(num_channels)
        scale, shift = scale / std, mean / std
    if not do_rescale and not do_normalize:
        return clip
    return torch.addcmul(-shift.view(-1, 1, 1), clip, scale.view(-1, 1, 1))


def transform_clips(
    clips: torch.Tensor,
    *,
    do_resize: bool,
    size: dict[str, int],
    resample: int,
    do_center_crop: bool,
    crop_size: dict[str, int],
    spatial_crops: str,
    do_rescale: bool,
    rescale_factor: float,
    do_normalize: bool,
    image_mean: Sequence[float],
    image_std: Sequence[float],
) -> torch.Tensor:
    """Clips ``[N, T, C, H, W]`` of one video (uint8 or float) -> float32 views ``[N * n, T, C, h, w]``.

    Clip-major (view ``c * n + j`` is spatial crop ``j`` of clip ``c``), as the evaluation recipe: each crop box
    is cut in source pixels and resized (bilinear, antialiased) to the output size, mirrored where the crops
    say so, then rescaled and normalised. A ``uint8`` clip on the CPU is resized in ``uint8`` when bilinear.
    """
    num_clips, num_frames = clips.shape[:2]
    boxes, flips, out_size = view_boxes(
        *clips.shape[-2:],
        do_resize=do_resize,
        size=size,
        do_center_crop=do_center_crop,
        crop_size=crop_size,
        spatial_crops=spatial_crops,
    )
    keep_uint8 = clips.dtype == torch.uint8 and clips.device.type == "cpu" and resample == 2
    views = []
    for (x0, y0, x1, y1), flip in zip(boxes.tolist(), flips.tolist()):
        region = clips[..., y0:y1, x0:x1].flatten(0, 1)
        region = region if keep_uint8 else region.to(torch.float32)
        region = resize_clip(region, out_size, resample)
        if resample == 3 and clips.dtype == torch.uint8:
            region = region.clamp(0, 255)  # bicubic overshoots; PIL clamps to the uint8 range
        views.append(region.flip(-1) if flip else region)
    # [n, N * T, C, h, w] -> [N, n, T, C, h, w] -> [N * n, T, C, h, w]
    stacked = torch.stack(views).to(torch.float32)
    stacked = stacked.unflatten(1, (num_clips, num_frames)).transpose(0, 1).flatten(0, 1)
    return rescale_and_normalize_clip(
        stacked, do_rescale, rescale_factor, do_normalize, image_mean, image_std
    ).contiguous()


_TRANSFORM_PARAMETERS = (
    "do_resize",
    "size",
    "resample",
    "do_center_crop",
    "crop_size",
    "spatial_crops",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
)


def pack_pixel_values(clips: list[torch.Tensor], return_tensors: str | TensorType | None) -> BatchFeature:
    """``BatchFeature`` with ``pixel_values``: ``[B, ...]`` for "pt"/"np", else a list of one tensor per video.

    A video is ``[T, C, H, W]`` when it gives one view, ``[V, T, C, H, W]`` when it gives several (clips x
    spatial crops); hf_vssl models average their feature over the views.
    """
    if return_tensors is None:
        return BatchFeature(data={"pixel_values": clips})
    if return_tensors not in ("pt", "np"):
        raise ValueError(f'`return_tensors` must be "pt", "np" or None, got {return_tensors!r}.')
    shapes = {tuple(clip.shape) for clip in clips}
    if len(shapes) > 1:
        raise ValueError(
            f"Cannot stack videos of different shapes {sorted(shapes)} into one tensor: give every video the same "
            "number of frames, views and size (do_sample_frames / do_center_crop), or pass return_tensors=None."
        )
    pixel_values = torch.stack(clips)
    if return_tensors == "np":
        pixel_values = pixel_values.cpu().numpy()
    return BatchFeature(data={"pixel_values": pixel_values})


class VideoSSLProcessingMixin:
    """Defaults, parameter handling and the clip transform shared by the hf_vssl image and video processors.

    Parameters (saved in the processor config, each overridable per call):
        do_convert_rgb (`bool`, defaults to `True`): repeat grayscale to 3 channels, drop an alpha channel.
        do_resize (`bool`, defaults to `True`), size (`dict`, defaults to `{"shortest_edge": 128}`): resize the
            shorter side to ``shortest_edge`` keeping the aspect ratio, or to exactly ``{"height", "width"}``.
        resample (`int`, defaults to 2 = bilinear): PIL resampling code (0 nearest, 2 bilinear, 3 bicubic).
        do_center_crop (`bool`, defaults to `True`), crop_size (`dict`, defaults to 112 x 112): the output is the
            ``crop_size`` crop of the frame resized by ``size``; it is cut in source pixels and resized alone.
        spatial_crops (`str`, defaults to `"center"`): ``"center"``, ``"three"`` (along the long side) or
            ``"ten"`` (corners and centre, each also mirrored); each crop is one view of the video.
        do_rescale (`bool`, defaults to `True`), rescale_factor (`float`, defaults to 1/255).
        do_normalize (`bool`, defaults to `True`), image_mean / image_std (defaults to ImageNet's).
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = VideoSSLImagesKwargs

    do_convert_rgb = True
    do_resize = True
    size = {"shortest_edge": 128}
    resample = 2  # PILImageResampling.BILINEAR
    do_center_crop = True
    crop_size = {"height": 112, "width": 112}
    spatial_crops = "center"
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    image_mean = list(IMAGENET_DEFAULT_MEAN)
    image_std = list(IMAGENET_DEFAULT_STD)

    def __init__(self, **kwargs) -> None:
        # Class defaults, overridden by what was given, checked before the base class sees anything.
        names = self.valid_kwargs.__annotations__
        given = {
            name: kwargs.pop(name) for name in list(kwargs) if name in names and kwargs[name] is not None
        }
        params = check_parameters({name: copy.deepcopy(getattr(type(self), name)) for name in names} | given)
        # What is left (auto_map, *_processor_type, ...) is stored as attributes by the transformers base class.
        super().__init__(**kwargs)
        for name, value in params.items():
            setattr(self, name, value)

    def _call_parameters(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """This call's parameters: the processor's own, overridden by the (checked) keyword arguments."""
        names = self.valid_kwargs.__annotations__
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            # transformers' convention: unknown processor kwargs are reported, not fatal
            logger.warning(f"{type(self).__name__} ignores unrecognized keyword arguments: {unknown}.")
        overrides = {name: value for name, value in kwargs.items() if name in names and value is not None}
        return check_parameters({name: getattr(self, name) for name in names} | overrides)

    def _transform_clips(
        self,
        clips: list[torch.Tensor],
        params: dict[str, Any],
        return_tensors: str | TensorType | None,
        device: str | torch.device | None,
    ) -> BatchFeature:
        transform_params = {name: params[name] for name in _TRANSFORM_PARAMETERS}
        if params["do_rescale"] and any(
            clip.is_floating_point() and clip.numel() and clip.max() <= 1 for clip in clips
        ):
            logger.warning_once(
                "A video with float values in [0, 1] is being rescaled by `rescale_factor` again; pass "
                "do_rescale=False if it is already rescaled."
            )
        processed = []
        for clip in clips:  # [N, T, C, H, W]: the sampled clips of one video
            views = transform_clips(clip.to(device) if device else clip, **transform_params)
            processed.append(views[0] if views.shape[0] == 1 else views)
        return pack_pixel_values(processed, return_tensors)


class VideoSSLImageProcessor(VideoSSLProcessingMixin, BaseImageProcessor):
    r"""Image processor for hf_vssl video models: decoded frames in, ``pixel_values`` ``[B, T, C, H, W]`` out.

    It takes videos that are already decoded, with the frames already chosen, and applies the shared clip
    transform (see :class:`VideoSSLProcessingMixin` for the parameters). Use
    :class:`~.video_processing_vssl.VideoSSLVideoProcessor` to read files and sample frames.

    Accepted input: one video as a list of frames (PIL images or ``[H, W, C]`` arrays) or an array / tensor
    ``[T, H, W, C]`` or ``[T, C, H, W]`` (uint8 in [0, 255], or float); a batch as a list of those or an array
    ``[B, T, ...]``.

    Example:

    ```python
    >>> processor = VideoSSLImageProcessor(size={"shortest_edge": 64}, crop_size=56)
    >>> frames = [np.zeros((90, 120, 3), dtype=np.uint8)] * 8  # one video of 8 frames
    >>> processor(frames, return_tensors="pt")["pixel_values"].shape
    torch.Size([1, 8, 3, 56, 56])
    ```
    """

    def __init__(self, **kwargs: Unpack[VideoSSLImagesKwargs]) -> None:
        super().__init__(**kwargs)

    def __call__(self, images: Any, **kwargs) -> BatchFeature:
        return self.preprocess(images, **kwargs)

    def preprocess(
        self,
        images: Any,
        input_data_format: str | None = None,
        device: str | torch.device | None = None,
        return_tensors: str | TensorType | None = None,
        **kwargs: Unpack[VideoSSLImagesKwargs],
    ) -> BatchFeature:
        """Transform decoded videos.

        Args:
            images: one video or a batch (see the class docstring).
            input_data_format: ``"channels_first"`` or ``"channels_last"`` for arrays whose layout is ambiguous.
            device: where to run the transform (e.g. ``"cuda"``); the output stays there.
            return_tensors: ``"pt"`` -> ``[B, T, C, H, W]`` tensor, ``"np"`` -> array, ``None`` -> list of
                ``[T, C, H, W]`` tensors.
            **kwargs: per-call overrides of the processor's parameters.
        """
        params = self._call_parameters(kwargs)
        if isinstance(images, (str, bytes)) or hasattr(images, "__fspath__"):
            raise ValueError(
                f"{type(self).__name__} takes decoded frames, not a video file ({images!r}); use "
                "VideoSSLVideoProcessor (AutoVideoProcessor) to decode files."
            )
        clips = [
            clip_to_tensor(video, input_data_format, params["do_convert_rgb"])[None]
            for video in make_batched_videos(images)
        ]
        return self._transform_clips(clips, params, return_tensors, device)


VideoSSLImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "SPATIAL_CROPS",
    "VideoSSLImageProcessor",
    "VideoSSLProcessingMixin",
    "crop_boxes",
    "transform_clips",
]
