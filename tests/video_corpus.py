"""A small corpus of real video files of many kinds, good and bad, written deterministically with PyAV.

:func:`write_corpus` writes a folder as a new user's video folder may look: every container and codec that
PyAV's bundled FFmpeg encodes (h264 with B-frames, hevc, mpeg4, mpeg2, vp9, av1, mjpeg, ffv1 in mp4, mkv, avi,
mov, webm, mpg), variable frame rate, odd sizes, gray, two video streams, rotation, unusual names, two files
that share a stem, symlinks; and broken files of every kind the data engine must name with a reason. Good
videos show their frame index (:func:`tests.video_factory.read_index`), starting at a number of their own.

Files are byte-identical from run to run: encoders run one thread (x264 without assembly), and codecs and
muxers are asked for bit-exact output (no version strings, no creation times). Every file is tiny (8-12
frames, 32-48 pixels), so the whole corpus is written in about a second.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .video_factory import index_frames, write_audio_only, write_truncated_copy

BITEXACT = 0x00800000  # AV_CODEC_FLAG_BITEXACT
X264 = {"threads": "1", "x264-params": "asm=0:keyint=4:min-keyint=4:scenecut=0"}


@dataclass(frozen=True)
class GoodVideo:
    path: Path
    num_frames: int
    first_index: int  # the index drawn on frame 0 (frame i shows first_index + i)
    rotation: int = 0  # display rotation (counter-clockwise degrees) the frames come back with


@dataclass(frozen=True)
class BadVideo:
    path: Path
    reason: str  # the VideoDecodeError reason the data engine gives for it


def encode(
    path: Path,
    codec: str,
    frames: np.ndarray,
    *,
    pix_fmt: str = "yuv420p",
    options: dict[str, str] | None = None,
    gop: int = 4,
    b_frames: int | None = None,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    streams: int = 1,
    rotation: int | None = None,
    container_format: str | None = None,
    faststart: bool = False,
) -> Path:
    """Encode ``frames`` (``uint8 [T, H, W, 3]``) bit-exactly into ``path`` with PyAV; ``streams`` > 1 writes
    that many video streams (the same frames, the first one is the video)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames.shape[1:3]
    muxer_options = {"fflags": "+bitexact", **({"movflags": "+faststart"} if faststart else {})}
    with av.open(str(path), "w", format=container_format, options=muxer_options) as container:
        outs = []
        for _ in range(streams):
            stream = container.add_stream(codec, rate=25)
            stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
            stream.gop_size = gop
            stream.codec_context.flags |= BITEXACT
            if time_base is not None:
                stream.codec_context.time_base = stream.time_base = time_base
            if b_frames is not None:
                stream.max_b_frames = b_frames
            if codec not in ("libx264", "libx265", "ffv1", "mjpeg", "libsvtav1"):
                stream.bit_rate = 300_000
            if options:
                stream.options = dict(options)
            if rotation is not None:
                stream.set_display_rotation(rotation)
            outs.append(stream)
        for i, array in enumerate(frames):
            source = "gray" if pix_fmt == "gray" else "rgb24"
            data = array[..., 0] if source == "gray" else array
            for stream in outs:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(data), format=source)
                frame = frame.reformat(format=pix_fmt, threads=1)
                if pts is not None:
                    frame.pts, frame.time_base = pts[i], time_base
                container.mux(stream.encode(frame))
        for stream in outs:
            container.mux(stream.encode(None))
    return path


def write_corpus(root: str | os.PathLike) -> tuple[list[GoodVideo], list[BadVideo]]:
    """Write the corpus under ``root`` (``root/videos`` is the video folder; ``root/elsewhere`` holds the
    target of a link from inside it). Returns the good videos and the bad ones with their expected reasons."""
    root = Path(root)
    folder = root / "videos"
    good: list[GoodVideo] = []
    bad: list[BadVideo] = []

    def add(name: str, codec: str, n: int = 8, size: tuple[int, int] = (32, 32), **kwargs) -> GoodVideo:
        first = 1000 * (len(good) + 1)
        path = encode(folder / name, codec, index_frames(np.arange(first, first + n), size), **kwargs)
        good.append(GoodVideo(path, n, first, kwargs.get("rotation") or 0))
        return good[-1]

    # codecs and containers
    add("h264/bframes.mp4", "libx264", 12, options=X264)
    bframes_avi = add("h264/bframes.avi", "libx264", 12, options=X264).path
    bframes_mkv = add("h264/bframes.mkv", "libx264", 12, options=X264).path
    add("h264/bframes.mov", "libx264", options=X264)
    add("h264/no_bframes.mp4", "libx264", options={**X264, "x264-params": X264["x264-params"] + ":bframes=0"})
    add("hevc/clip.mkv", "libx265", options={"x265-params": "pools=none:frame-threads=1:log-level=error"})
    mpeg4_avi = add("mpeg4/clip.avi", "mpeg4")
    mpeg4_mp4 = add("mpeg4/bframes.mp4", "mpeg4", b_frames=2)
    add("mpeg2/bframes.mpg", "mpeg2video", 12, b_frames=2)
    add("vp9/clip.webm", "libvpx-vp9", options={"threads": "1", "deadline": "realtime", "cpu-used": "8"})
    # (SVT-AV1 loses the index's last block at 64x64, not at 64x96)
    add(
        "av1/clip.mkv",
        "libsvtav1",
        size=(64, 96),
        options={"preset": "12", "crf": "10", "svtav1-params": "lp=1"},
    )
    add("mjpeg/clip.avi", "mjpeg", pix_fmt="yuvj420p")
    add("ffv1/clip.mkv", "ffv1", options={"threads": "1"})
    # shapes and timing
    add("shapes/odd size.mp4", "libx264", size=(33, 47), pix_fmt="yuv444p", options=X264)
    add("shapes/gray.mkv", "ffv1", pix_fmt="gray", options={"threads": "1"})
    add("shapes/two_streams.mkv", "libx264", streams=2, options=X264)
    add("shapes/rotated.mp4", "libx264", rotation=90, options=X264)
    vfr = [0, 13, 40, 41, 90, 200, 230, 300]
    add("shapes/vfr.mkv", "libx264", pts=vfr, time_base=Fraction(1, 1000), options=X264)
    add("shapes/one_frame.mp4", "libx264", 1, options=X264)
    last_long = [0, 40, 80, 120, 160, 200, 240, 3240]  # a slideshow's last frame: no cut, though B-frames
    add("shapes/long_last_frame.mkv", "libx264", pts=last_long, time_base=Fraction(1, 1000), options=X264)
    # names
    add("names/clip.mp4", "libx264", options=X264)
    add("names/clip.mkv", "libx264", options=X264)  # same stem as clip.mp4
    add("names/a.b.c v2 (final).mp4", "mpeg4")
    add("names/ünïcödé 视频.mkv", "mpeg4")
    # links: a linked folder, and a link to a file outside the video folder
    target = encode(root / "elsewhere" / "outside.mp4", "mpeg4", index_frames(np.arange(50000, 50008)))
    (folder / "links").mkdir(parents=True)
    os.symlink(target, folder / "links" / "outside.mp4")
    good.append(GoodVideo(folder / "links" / "outside.mp4", 8, 50000))
    os.symlink(folder / "mpeg4", folder / "links" / "linked_folder", target_is_directory=True)
    for video in (mpeg4_avi, mpeg4_mp4):  # the same files again, under the link's path
        good.append(GoodVideo(folder / "links" / "linked_folder" / video.path.name, 8, video.first_index))
    os.symlink(folder, folder / "links" / "loop", target_is_directory=True)  # never entered

    # bad files
    def broken(name: str, reason: str, write) -> None:
        path = folder / "bad" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
        bad.append(BadVideo(path, reason))

    rng = np.random.default_rng(0)
    broken("empty.mp4", "empty file", lambda p: p.write_bytes(b""))
    broken("garbage.mkv", "cannot open", lambda p: p.write_bytes(rng.bytes(3000)))
    broken("text.avi", "cannot open", lambda p: p.write_text("not a video\n" * 50))
    broken("audio_only.mp4", "no video stream", write_audio_only)
    broken("zero_frames.mkv", "cannot open", lambda p: _zero_frame_video(p))
    full = encode(root / "elsewhere" / "full.mp4", "libx264", index_frames(40), options=X264)
    fast = encode(root / "elsewhere" / "fast.mp4", "libx264", index_frames(40), options=X264, faststart=True)
    broken("cut_no_index.mp4", "cannot open", lambda p: write_truncated_copy(full, p, 0.5))
    broken("cut_faststart.mp4", "truncated", lambda p: write_truncated_copy(fast, p, 0.6))
    broken("cut_bframes.avi", "cannot open", lambda p: write_truncated_copy(bframes_avi, p, 0.7))
    broken("cut_bframes.mkv", "truncated", lambda p: write_truncated_copy(bframes_mkv, p, 0.7))
    broken("dangling.mp4", "cannot open", lambda p: os.symlink(root / "elsewhere" / "gone.mp4", p))
    return good, bad


def _zero_frame_video(path: Path) -> None:
    """A video file whose video stream has no frame at all."""
    with av.open(str(path), "w", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width = stream.height = 32
        stream.codec_context.flags |= BITEXACT
        container.start_encoding()  # the header, with the stream, and then not a single frame
