"""Video processor for hf_vssl video models: video files or arrays in, ``pixel_values`` ``[B, T, C, H, W]`` out.

Files are decoded with PyAV (no torchvision or torchcodec needed); ``num_clips`` clips of ``num_frames`` frames at
``frame_stride`` are taken uniformly over the video, and the clip transform is the one in
:mod:`.image_processing_vssl`: the views of the evaluation recipe that measured a checkpoint's card. This is what
``AutoVideoProcessor`` returns for hf_vssl checkpoints and what ``pipeline("video-classification")`` calls as
``video_processor(path, num_frames=N, do_sample_frames=True, return_tensors="pt")``.

This module is shipped with pushed checkpoints as remote code: it imports only numpy, torch, av, transformers and
its siblings ``image_processing_vssl`` and ``video_decoding`` (the data engine's decoder), never hf_vssl.
"""

import errno
import os
from typing import Any

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import Unpack
from transformers.utils import TensorType

from .image_processing_vssl import (
    VideoSSLImagesKwargs,
    VideoSSLProcessingMixin,
    clip_to_tensor,
    make_batched_videos,
)
from .video_decoding import VideoDecodeError, VideoReader

try:  # transformers >= 5.2x: the backend-free video processor base
    from transformers.video_processing_utils import VideoProcessorMixin as _VideoProcessorBase
except ImportError:  # earlier 5.x: only the torchvision-flavoured base; every method we use is overridden
    from transformers.video_processing_utils import BaseVideoProcessor as _VideoProcessorBase


# ----------------------------------------------------------------------------------------------------------
# Frame sampling and decoding
# ----------------------------------------------------------------------------------------------------------
def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def clip_frame_indices(
    total_frames: int, num_frames: int, frame_stride: int = 1, num_clips: int = 1
) -> np.ndarray:
    """Frames of ``num_clips`` clips of ``num_frames`` frames at ``frame_stride``, spread uniformly over a video.

    Clip starts go evenly from the first to the last possible start (one clip: centred), so the clips see the
    video at the rate the model was trained on, wherever it is. Videos shorter than a clip repeat their last
    frame.

    Returns:
        ``int64`` array ``[num_clips, num_frames]`` in ``[0, total_frames)``.
    """
    if total_frames <= 0:
        raise ValueError(f"Cannot sample frames from a video with {total_frames} frames.")
    for name, value in (("num_frames", num_frames), ("frame_stride", frame_stride), ("num_clips", num_clips)):
        if value <= 0:
            raise ValueError(f"`{name}` must be positive, got {value}.")
    last = max(0, total_frames - ((num_frames - 1) * frame_stride + 1))
    starts = np.array([last // 2]) if num_clips == 1 else _round_half_up(np.linspace(0, last, num_clips))
    indices = starts[:, None] + np.arange(num_frames)[None, :] * frame_stride
    return np.minimum(indices, total_frames - 1).astype(np.int64)


def is_video_source(obj: Any) -> bool:
    """A path, URL, encoded bytes or a binary file object: something PyAV opens."""
    return isinstance(obj, (str, bytes, bytearray, os.PathLike)) or (
        hasattr(obj, "read") and hasattr(obj, "seek")
    )


def read_video(
    source: Any, num_frames: int | None = None, frame_stride: int = 1, num_clips: int = 1
) -> np.ndarray:
    """Decode a video with PyAV: every frame, or the clips of :func:`clip_frame_indices`.

    Decoding is :class:`~.video_decoding.VideoReader`'s (the data engine's): frame-exact, seeking to the keyframe
    before the wanted frames. A truncated file is sampled over the frames that really decode.

    Args:
        source: a file path, URL, ``bytes`` of an encoded video, or a binary file object.
        num_frames: frames per clip; ``None`` returns every frame.
        frame_stride, num_clips: the clips' stride and count (see :func:`clip_frame_indices`).

    Returns:
        RGB frames, uint8: ``[F, H, W, 3]`` (every frame) or ``[num_clips, num_frames, H, W, 3]``.

    Raises:
        FileNotFoundError / IsADirectoryError: the path does not exist or is a folder.
        VideoDecodeError (a ``ValueError``): the file is empty, is not a video, has no video stream, or has no
            decodable frame. Every message names the file.
    """
    if isinstance(source, (str, os.PathLike)) and "://" not in os.fspath(source):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, "Video file not found", path)
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, "Expected a video file, got a directory", path)
    with VideoReader(source) as reader:
        total = reader.decodable_frames
        if total == 0:
            raise VideoDecodeError(reader.name, "truncated", "no frame can be decoded")
        if num_frames is None:
            return reader.get_frames(np.arange(total))
        indices = clip_frame_indices(total, num_frames, frame_stride, num_clips)
        frames = reader.get_frames(indices.reshape(-1))
        return frames.reshape(*indices.shape, *frames.shape[1:])


# ----------------------------------------------------------------------------------------------------------
# The processor
# ----------------------------------------------------------------------------------------------------------
class VideoSSLVideosKwargs(VideoSSLImagesKwargs, total=False):
    """Saved parameters of :class:`VideoSSLVideoProcessor`: the image ones plus frame sampling."""

    do_sample_frames: bool
    num_frames: int
    frame_stride: int
    num_clips: int


class VideoSSLVideoProcessor(VideoSSLProcessingMixin, _VideoProcessorBase):
    r"""Video processor for hf_vssl video models: files or arrays in, ``pixel_values`` out.

    Saved with a checkpoint, it is the evaluation recipe that measured the checkpoint's model card
    (``hf_vssl.data.EvalViews.from_processor`` builds that recipe from it): ``num_clips`` clips of ``num_frames``
    frames at the training stride ``frame_stride``, spread uniformly over each video, each clip seen through
    ``spatial_crops``; hf_vssl models average their feature over these views. A video gives
    ``[num_clips * crops, T, C, H, W]`` (clip-major), or ``[T, C, H, W]`` when that is one view; a batch stacks
    them: ``[B, V, T, C, H, W]`` / ``[B, T, C, H, W]``.

    Parameters (saved in ``video_preprocessor_config.json``, each overridable per call):
        do_sample_frames (`bool`, defaults to `True`): sample the clips (with `False`, every frame, one clip).
        num_frames (`int`, defaults to 16), frame_stride (`int`, defaults to 2), num_clips (`int`, defaults to
            5): the clips (see :func:`clip_frame_indices`).
        and the clip transform's: ``do_convert_rgb``, ``do_resize``, ``size`` (``{"shortest_edge": 128}``),
        ``resample``, ``do_center_crop``, ``crop_size`` (112 x 112), ``spatial_crops`` (``"center"``),
        ``do_rescale``, ``rescale_factor``, ``do_normalize``, ``image_mean``, ``image_std`` (ImageNet) -- see
        ``VideoSSLProcessingMixin``.

    Accepted input, one video or a list of them: a file path / URL / ``bytes`` / binary file object (decoded with
    PyAV), an array or tensor ``[T, H, W, C]`` or ``[T, C, H, W]`` (uint8 or float), or a list of frames (PIL
    images or ``[H, W, C]`` arrays). A batch may also be an array ``[B, T, ...]``.

    Example:

    ```python
    >>> processor = VideoSSLVideoProcessor(num_frames=8, num_clips=2)
    >>> processor(["a.mp4", "b.webm"], return_tensors="pt")["pixel_values"].shape
    torch.Size([2, 2, 8, 3, 112, 112])
    ```
    """

    valid_kwargs = VideoSSLVideosKwargs
    do_sample_frames = True
    num_frames = 16
    frame_stride = 2
    num_clips = 5

    def __init__(self, **kwargs: Unpack[VideoSSLVideosKwargs]) -> None:
        super().__init__(**kwargs)

    @classmethod
    def for_clip_size(cls, num_frames: int, image_size: int, **overrides) -> "VideoSSLVideoProcessor":
        """The processor for a model taking clips of ``num_frames`` frames of ``image_size`` x ``image_size``.

        The short side the crop is cut from keeps the defaults' proportion (128 for a 112 crop).
        """
        default_short, default_crop = cls.size["shortest_edge"], cls.crop_size["height"]
        short_side = max(image_size, round(image_size * default_short / default_crop))
        settings = {"num_frames": num_frames, "size": {"shortest_edge": short_side}, "crop_size": image_size}
        return cls(**{**settings, **overrides})

    def describe_sampling(self) -> str:
        """One sentence saying which views of a video this processor makes (for model cards)."""
        crop = self.crop_size
        views = f"{crop['height']}x{crop['width']}"
        crops = {
            "center": "the centre crop",
            "three": "3 crops",
            "ten": "10 crops (corners, centre, mirrored)",
        }
        resize = (
            f"frames resized to short side {self.size['shortest_edge']}"
            if "shortest_edge" in self.size
            else f"frames resized to {self.size['height']}x{self.size['width']}"
        )
        clips = "clip" if self.num_clips == 1 else "clips"
        return (
            f"{self.num_clips} {clips} of {self.num_frames} frames at stride {self.frame_stride} spread uniformly "
            f"over each video, {crops[self.spatial_crops]} of {views} from {resize}, features averaged over "
            "the views"
        )

    def __call__(self, videos: Any, **kwargs) -> BatchFeature:
        return self.preprocess(videos, **kwargs)

    def preprocess(
        self,
        videos: Any,
        input_data_format: str | None = None,
        device: str | torch.device | None = None,
        return_tensors: str | TensorType | None = None,
        **kwargs: Unpack[VideoSSLVideosKwargs],
    ) -> BatchFeature:
        """Decode, sample and transform videos.

        Args:
            videos: one video or a batch (see the class docstring).
            input_data_format: ``"channels_first"`` or ``"channels_last"`` for arrays whose layout is ambiguous.
            device: where to run the transform (e.g. ``"cuda"``); the output stays there.
            return_tensors: ``"pt"`` -> ``[B, (V,) T, C, H, W]`` tensor, ``"np"`` -> array, ``None`` -> list of
                ``[(V,) T, C, H, W]`` tensors.
            **kwargs: per-call overrides of the processor's parameters (``num_frames``, ``num_clips``, ...).
        """
        params = self._call_parameters(kwargs)
        clips = [
            self._load_clips(video, params, input_data_format)
            for video in make_batched_videos(videos, is_video_source)
        ]
        return self._transform_clips(clips, params, return_tensors, device)

    @staticmethod
    def _load_clips(video: Any, params: dict[str, Any], input_data_format: str | None) -> torch.Tensor:
        """One video as its sampled clips ``[N, T, C, H, W]`` (every frame as one clip without sampling)."""
        sampling = (
            (params["num_frames"], params["frame_stride"], params["num_clips"])
            if params["do_sample_frames"]
            else None
        )
        if is_video_source(video):
            frames = read_video(video, *sampling) if sampling else read_video(video)[None]
            return clip_to_tensor(frames.reshape(-1, *frames.shape[2:]), "channels_last").unflatten(
                0, frames.shape[:2]
            )
        clip = clip_to_tensor(video, input_data_format, params["do_convert_rgb"])
        if sampling is None:
            return clip[None]
        return clip[torch.from_numpy(clip_frame_indices(clip.shape[0], *sampling))]


VideoSSLVideoProcessor.register_for_auto_class("AutoVideoProcessor")

__all__ = ["VideoDecodeError", "VideoSSLVideoProcessor", "clip_frame_indices", "read_video"]
