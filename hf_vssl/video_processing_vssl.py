"""Video processor for hf_vssl video models: video files or arrays in, ``pixel_values`` ``[B, T, C, H, W]`` out.

Files are decoded with PyAV (no torchvision or torchcodec needed) and ``num_frames`` frames are sampled uniformly
over the whole video; the clip transform is the one in :mod:`.image_processing_vssl`. This is what
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
def sample_frame_indices(total_frames: int, num_frames: int) -> np.ndarray:
    """Indices of ``num_frames`` frames spread uniformly over a video of ``total_frames`` frames.

    Frame ``i`` is the middle of the ``i``-th of ``num_frames`` equal segments, so the whole video is covered and
    ``total_frames == num_frames`` keeps every frame. Shorter videos repeat frames (nearest-frame upsampling).

    Returns:
        ``int64`` array ``[num_frames]``, non-decreasing, in ``[0, total_frames)``.
    """
    if total_frames <= 0:
        raise ValueError(f"Cannot sample frames from a video with {total_frames} frames.")
    if num_frames <= 0:
        raise ValueError(f"`num_frames` must be positive, got {num_frames}.")
    centres = (np.arange(num_frames) + 0.5) * (total_frames / num_frames)
    return np.minimum(centres.astype(np.int64), total_frames - 1)


def is_video_source(obj: Any) -> bool:
    """A path, URL, encoded bytes or a binary file object: something PyAV opens."""
    return isinstance(obj, (str, bytes, bytearray, os.PathLike)) or (
        hasattr(obj, "read") and hasattr(obj, "seek")
    )


def read_video(source: Any, num_frames: int | None = None) -> np.ndarray:
    """Decode a video with PyAV, sampling ``num_frames`` frames uniformly over its whole length.

    Decoding is :class:`~.video_decoding.VideoReader`'s (the data engine's): frame-exact, seeking to the keyframe
    before the wanted frames. A truncated file is sampled over the frames that really decode.

    Args:
        source: a file path, URL, ``bytes`` of an encoded video, or a binary file object.
        num_frames: how many frames to return (see :func:`sample_frame_indices`); ``None`` returns every frame.

    Returns:
        RGB frames ``[T, H, W, 3]`` uint8.

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
        indices = np.arange(total) if num_frames is None else sample_frame_indices(total, num_frames)
        return reader.get_frames(indices)


# ----------------------------------------------------------------------------------------------------------
# The processor
# ----------------------------------------------------------------------------------------------------------
class VideoSSLVideosKwargs(VideoSSLImagesKwargs, total=False):
    """Saved parameters of :class:`VideoSSLVideoProcessor`: the image ones plus frame sampling."""

    do_sample_frames: bool
    num_frames: int


class VideoSSLVideoProcessor(VideoSSLProcessingMixin, _VideoProcessorBase):
    r"""Video processor for hf_vssl video models: files or arrays in, ``pixel_values`` ``[B, T, C, H, W]`` out.

    Parameters (saved in ``video_preprocessor_config.json``, each overridable per call):
        do_sample_frames (`bool`, defaults to `True`), num_frames (`int`, defaults to 16): sample ``num_frames``
            frames uniformly over each whole video (see :func:`sample_frame_indices`); with
            ``do_sample_frames=False`` every frame is kept.
        and the clip transform's: ``do_convert_rgb``, ``do_resize``, ``size`` (``{"shortest_edge": 128}``),
        ``resample``, ``do_center_crop``, ``crop_size`` (112 x 112), ``do_rescale``, ``rescale_factor``,
        ``do_normalize``, ``image_mean``, ``image_std`` (ImageNet) -- see ``VideoSSLProcessingMixin``.

    Accepted input, one video or a list of them: a file path / URL / ``bytes`` / binary file object (decoded with
    PyAV), an array or tensor ``[T, H, W, C]`` or ``[T, C, H, W]`` (uint8 or float), or a list of frames (PIL
    images or ``[H, W, C]`` arrays). A batch may also be an array ``[B, T, ...]``.

    Example:

    ```python
    >>> processor = VideoSSLVideoProcessor(num_frames=8)
    >>> processor(["a.mp4", "b.webm"], return_tensors="pt")["pixel_values"].shape
    torch.Size([2, 8, 3, 112, 112])
    ```
    """

    valid_kwargs = VideoSSLVideosKwargs
    do_sample_frames = True
    num_frames = 16

    def __init__(self, **kwargs: Unpack[VideoSSLVideosKwargs]) -> None:
        super().__init__(**kwargs)

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
            return_tensors: ``"pt"`` -> ``[B, T, C, H, W]`` tensor, ``"np"`` -> array, ``None`` -> list of
                ``[T, C, H, W]`` tensors.
            **kwargs: per-call overrides of the processor's parameters (``num_frames``, ``size``, ...).
        """
        params = self._call_parameters(kwargs)
        num_frames = params["num_frames"] if params["do_sample_frames"] else None
        clips = [
            self._load_clip(video, num_frames, input_data_format, params["do_convert_rgb"])
            for video in make_batched_videos(videos, is_video_source)
        ]
        return self._transform_clips(clips, params, return_tensors, device)

    @staticmethod
    def _load_clip(
        video: Any, num_frames: int | None, input_data_format: str | None, do_convert_rgb: bool
    ) -> torch.Tensor:
        """One video as ``[T, C, H, W]`` with its frames sampled (all frames when ``num_frames`` is None)."""
        if is_video_source(video):
            return clip_to_tensor(read_video(video, num_frames), "channels_last", do_convert_rgb)
        clip = clip_to_tensor(video, input_data_format, do_convert_rgb)
        if num_frames is not None:
            clip = clip[torch.from_numpy(sample_frame_indices(clip.shape[0], num_frames))]
        return clip


VideoSSLVideoProcessor.register_for_auto_class("AutoVideoProcessor")

__all__ = ["VideoDecodeError", "VideoSSLVideoProcessor", "read_video", "sample_frame_indices"]
