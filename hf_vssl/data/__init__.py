"""Data engine: PyAV decoding, streaming video sources, synthetic motion videos and shard preparation."""

from ..video_decoding import SkippedVideos, VideoDecodeError, VideoInfo, VideoReader, read_frames
from .sources import load_video_source, source_label_names, split_source_for_process
from .synthetic import MOTION_CLASSES, render_motion_video, write_synthetic_shards, write_synthetic_videos

__all__ = [
    "MOTION_CLASSES",
    "SkippedVideos",
    "VideoDecodeError",
    "VideoInfo",
    "VideoReader",
    "load_video_source",
    "read_frames",
    "render_motion_video",
    "source_label_names",
    "split_source_for_process",
    "write_synthetic_shards",
    "write_synthetic_videos",
]
