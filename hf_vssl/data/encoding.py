"""Video encoding with PyAV: the one encoder behind prepared shards, synthetic videos, benchmark and test footage.

:func:`encode_video` writes RGB frames into a real container (MP4, Matroska, WebM) with the FFmpeg encoders that
PyAV bundles (``libx264``, ``mpeg4``, ``libvpx-vp9``), so that everything downstream runs the same demux and
decode path as real data. ``libx264`` and ``mpeg4`` output is reproducible byte for byte: the encoder runs one
thread, and the RGB -> YUV conversion runs with one swscale thread (FFmpeg's threaded conversion is not
reproducible for every frame size).
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import BinaryIO

import av
import numpy as np

__all__ = ["encode_video"]


def encode_video(
    frames: Iterable[np.ndarray],
    target: str | os.PathLike | BinaryIO | None = None,
    *,
    fps: float | Fraction = 25,
    codec: str = "libx264",
    gop: int | None = None,
    crf: int | None = None,
    preset: str | None = None,
    fast_decode: bool = False,
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    rotation: int | None = None,
    container_format: str | None = None,
    faststart: bool = False,
    container_options: dict[str, str] | None = None,
) -> bytes | None:
    """Encode RGB frames (each ``uint8 [H, W, 3]``, all of one size) into a video container.

    The pixel format is ``yuv420p``, except for ``libx264`` with an odd frame side, which gets ``yuv444p``
    (4:2:0 needs even sides). Codecs other than ``libx264`` get about 0.2 bit per pixel, at least 200 kb/s
    (``mpeg4``'s default of 200 kb/s smears large frames), and no B-frames.

    Args:
        frames: an array ``[T, H, W, 3]`` or any iterable of frames, consumed one frame at a time (a decoder's
            output can be re-encoded without holding the whole video).
        target: a path or a writable binary file object; ``None`` returns the encoded file as ``bytes``.
        fps: frame rate, as a fraction with a denominator of at most 1001; ``<= 0`` (unknown) means 25.
        codec: ``"libx264"``, ``"mpeg4"`` or ``"libvpx-vp9"``.
        gop: keyframe interval in frames (for ``libx264`` exactly that, with no scene-cut keyframes);
            ``None`` keeps the encoder's default.
        crf, preset: ``libx264`` quality and speed; ``None`` keeps x264's defaults (23, ``"medium"``).
        fast_decode: ``libx264`` ``tune=fastdecode``.
        pts: explicit presentation timestamps in ``time_base`` units (variable frame rate), one per frame.
        time_base: the time base of ``pts`` (default ``1/1000`` when ``pts`` is given).
        rotation: display rotation in degrees, counter-clockwise, written as a display matrix.
        container_format: e.g. ``"mp4"``, ``"matroska"``, ``"webm"``; default: from the target path's
            extension, ``"mp4"`` for bytes and file objects.
        faststart: put the MP4 index at the front of the file (as streaming sites do).
        container_options: extra muxer options, e.g. ``{"use_editlist": "1"}``.

    Raises:
        ValueError: there are no frames, a frame is not ``[H, W, 3]`` of the first frame's size, or ``pts``
            does not hold one entry per frame.
    """
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError("no frames to encode")
    first = np.asarray(first, dtype=np.uint8)
    if first.ndim != 3 or first.shape[-1] != 3:
        raise ValueError(f"frames must be [H, W, 3], got {first.shape}")
    height, width = first.shape[:2]
    buffer = io.BytesIO() if target is None else None
    if container_format is None and not isinstance(target, (str, os.PathLike)):
        container_format = "mp4"
    options = dict(container_options or {})
    if faststart:
        options["movflags"] = "+faststart"
    if pts is not None:
        time_base = time_base or Fraction(1, 1000)
    rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
    count = 0
    with av.open(buffer or target, mode="w", format=container_format, options=options) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv444p" if codec == "libx264" and (height % 2 or width % 2) else "yuv420p"
        if time_base is not None:
            stream.codec_context.time_base = time_base
            stream.time_base = time_base
        if gop is not None:
            stream.gop_size = gop
        if codec == "libx264":
            x264 = {"threads": "1"}
            if crf is not None:
                x264["crf"] = str(crf)
            if preset is not None:
                x264["preset"] = preset
            if gop is not None:
                x264["x264-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0"
            if fast_decode:
                x264["tune"] = "fastdecode"
            stream.options = x264
        else:
            stream.bit_rate = int(max(width * height * float(rate) * 0.2, 200_000))
            stream.max_b_frames = 0
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for array in itertools.chain([first], frames):
            array = np.asarray(array, dtype=np.uint8)
            if array.shape != first.shape:
                raise ValueError(f"frame {count} is {array.shape}, the first frame {first.shape}")
            frame = av.VideoFrame.from_ndarray(array, format="rgb24").reformat(
                format=stream.pix_fmt, threads=1
            )
            if pts is not None:
                if count >= len(pts):
                    raise ValueError(f"pts holds {len(pts)} timestamps for more frames")
                frame.pts, frame.time_base = int(pts[count]), time_base
            container.mux(stream.encode(frame))
            count += 1
        container.mux(stream.encode(None))
    if pts is not None and count != len(pts):
        raise ValueError(f"pts holds {len(pts)} timestamps for {count} frames")
    return None if buffer is None else buffer.getvalue()
