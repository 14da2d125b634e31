"""PyAV decoding for the data engine lives in :mod:`hf_vssl.video_decoding` (a flat module, so that processors
shipped with checkpoints decode with the same code); this module keeps the ``hf_vssl.data.decoding`` names."""

from ..video_decoding import SkippedVideos, VideoDecodeError, VideoInfo, VideoReader, read_frames

__all__ = ["SkippedVideos", "VideoDecodeError", "VideoInfo", "VideoReader", "read_frames"]
