"""Write real encoded test videos with PyAV.

Everything here produces genuine containers (MP4 / Matroska / WebM) encoded by the FFmpeg encoders bundled
with PyAV (``libx264``, ``mpeg4``, ``libvpx-vp9``) through the project's one encoder,
:func:`hf_vssl.data.encoding.encode_video`, so tests exercise the same demux + decode path as real data.

Index-encoded videos: every frame carries its own frame index as a 4x4 grid of black/white blocks (16 bits,
row-major, most significant bit first). The blocks are large and fully saturated, so the index survives lossy
compression, odd frame sizes and resizing; :func:`read_index` recovers it from decoded RGB frames.

Typical use::

    path = write_index_video(tmp_path / "clip.mp4", num_frames=300, gop=32)
    frames = read_frames(path, [5, 290, 7])          # code under test
    assert read_index(frames).tolist() == [5, 290, 7]
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from hf_vssl.data.encoding import encode_video

INDEX_GRID = 4
INDEX_BITS = INDEX_GRID * INDEX_GRID
MAX_INDEX = 2**INDEX_BITS - 1

CODECS = ("libx264", "mpeg4", "libvpx-vp9")


# ----------------------------------------------------------------------------------------------------------
# Frame content
# ----------------------------------------------------------------------------------------------------------
def _cell_edges(length: int) -> np.ndarray:
    return np.linspace(0, length, INDEX_GRID + 1).round().astype(int)


def index_frames(indices: int | Sequence[int], size: tuple[int, int] = (64, 64)) -> np.ndarray:
    """Frames that encode their own index.

    Args:
        indices: a frame count ``T`` (frames ``0..T-1``) or an explicit list of indices to draw.
        size: ``(height, width)``; any size >= 8x8, odd sizes included.

    Returns:
        ``uint8`` array ``[T, H, W, 3]``. The red channel holds the bit blocks; green/blue hold a gentle
        gradient so the frames are not pure black/white (which some encoders treat specially).
    """
    idx = np.arange(indices) if isinstance(indices, int) else np.asarray(indices, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() > MAX_INDEX):
        raise ValueError(f"indices must be in [0, {MAX_INDEX}]")
    height, width = size
    bits = (idx[:, None] >> np.arange(INDEX_BITS - 1, -1, -1)) & 1  # [T, 16], MSB first
    rows, cols = _cell_edges(height), _cell_edges(width)
    row_cell = np.searchsorted(rows, np.arange(height), side="right") - 1  # [H] cell row of each pixel row
    col_cell = np.searchsorted(cols, np.arange(width), side="right") - 1  # [W]
    cell_id = row_cell[:, None] * INDEX_GRID + col_cell[None, :]  # [H, W]
    frames = np.empty((idx.size, height, width, 3), dtype=np.uint8)
    frames[..., 0] = bits[:, cell_id] * 255
    frames[..., 1] = np.linspace(40, 200, width, dtype=np.uint8)[None, None, :]
    frames[..., 2] = np.linspace(200, 40, height, dtype=np.uint8)[None, :, None]
    return frames


def read_index(frames: np.ndarray) -> np.ndarray:
    """Recover the indices drawn by :func:`index_frames` from decoded frames ``[T, H, W, 3]`` -> ``[T]``."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    height, width = frames.shape[1:3]
    rows, cols = _cell_edges(height), _cell_edges(width)
    bits = np.empty((frames.shape[0], INDEX_BITS), dtype=np.int64)
    for r in range(INDEX_GRID):
        for c in range(INDEX_GRID):
            # centre half of each cell: away from the block edges where compression smears
            r0, r1 = rows[r], rows[r + 1]
            c0, c1 = cols[c], cols[c + 1]
            dr, dc = max((r1 - r0) // 4, 0), max((c1 - c0) // 4, 0)
            patch = frames[:, r0 + dr : r1 - dr, c0 + dc : c1 - dc, 0]
            bits[:, r * INDEX_GRID + c] = patch.reshape(frames.shape[0], -1).mean(axis=1) > 127
    return (bits << np.arange(INDEX_BITS - 1, -1, -1)).sum(axis=1)


def noise_frames(num_frames: int, size: tuple[int, int] = (112, 112), seed: int = 0) -> np.ndarray:
    """Uniform random noise frames ``[T, H, W, 3]``: the worst case for a video codec (decode benchmarks)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (num_frames, *size, 3), dtype=np.uint8)


def smooth_frames(num_frames: int, size: tuple[int, int] = (112, 112), seed: int = 0) -> np.ndarray:
    """Smoothly moving colour gradients ``[T, H, W, 3]``: compresses like ordinary footage."""
    rng = np.random.default_rng(seed)
    height, width = size
    t = np.arange(num_frames)[:, None, None]
    y = np.arange(height)[None, :, None]
    x = np.arange(width)[None, None, :]
    freq = rng.uniform(0.02, 0.08, size=(3, 2))
    phase = rng.uniform(0, 2 * np.pi, size=3)
    channels = [
        127.5 + 120 * np.sin(freq[k, 0] * (x + 2 * t) + freq[k, 1] * (y - t) + phase[k]) for k in range(3)
    ]
    return np.stack(channels, axis=-1).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------
# Encoding
# ----------------------------------------------------------------------------------------------------------
def write_video(path: str | os.PathLike, frames: np.ndarray, **kwargs) -> Path:
    """Encode ``frames`` to ``path`` (parent folders are created); see :func:`~hf_vssl.data.encoding.encode_video`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    encode_video(frames, path, **kwargs)
    return path


def write_index_video(
    path: str | os.PathLike, num_frames: int = 32, size: tuple[int, int] = (64, 64), **kwargs
) -> Path:
    """A video whose frame ``i`` shows the number ``i`` (see :func:`read_index`)."""
    return write_video(path, index_frames(num_frames, size), **kwargs)


def write_end_trimmed_mp4(
    path: str | os.PathLike,
    num_frames: int = 30,
    keep_frames: int = 20,
    size: tuple[int, int] = (64, 64),
    **kwargs,
) -> Path:
    """An index MP4 that stores ``num_frames`` frames but whose edit list shows only the first
    ``keep_frames``, as editors trim a clip without re-encoding: it still declares ``num_frames`` frames."""
    data = bytearray(
        encode_video(index_frames(num_frames, size), container_options={"use_editlist": "1"}, **kwargs)
    )
    elst = data.find(b"elst")
    if elst < 0 or struct.unpack_from(">I", data, elst + 8)[0] != 1:
        raise RuntimeError("expected an MP4 edit list with one entry")
    # box type, version + flags, entry count, then the entry's segment duration (movie time scale)
    field = ">I" if data[elst + 4] == 0 else ">Q"
    (duration,) = struct.unpack_from(field, data, elst + 12)
    struct.pack_into(field, data, elst + 12, duration * keep_frames // num_frames)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


def vfr_timestamps(num_frames: int, seed: int = 0, min_ms: int = 10, max_ms: int = 120) -> list[int]:
    """Strictly increasing, irregular millisecond timestamps (variable frame rate), starting at 0."""
    rng = np.random.default_rng(seed)
    gaps = rng.integers(min_ms, max_ms + 1, size=num_frames - 1)
    return [0, *np.cumsum(gaps).tolist()]


def write_vfr_index_video(
    path: str | os.PathLike,
    num_frames: int = 40,
    size: tuple[int, int] = (64, 64),
    seed: int = 0,
    **kwargs,
) -> tuple[Path, list[int]]:
    """Index-encoded video with irregular frame durations (10-120 ms). Returns ``(path, pts_in_ms)``."""
    pts = vfr_timestamps(num_frames, seed)
    write_index_video(path, num_frames, size, pts=pts, time_base=Fraction(1, 1000), **kwargs)
    return Path(path), pts


# ----------------------------------------------------------------------------------------------------------
# Bad inputs
# ----------------------------------------------------------------------------------------------------------
def write_empty_file(path: str | os.PathLike) -> Path:
    """A zero-byte file with a video extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_text_as_video(path: str | os.PathLike) -> Path:
    """A plain text file named like a video."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not a video\n" * 20)
    return path


def write_audio_only(path: str | os.PathLike, seconds: float = 0.5, rate: int = 16000) -> Path:
    """An MP4 with a single AAC audio stream and no video stream."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = (0.3 * np.sin(np.linspace(0, 440 * 2 * np.pi * seconds, int(rate * seconds)))).astype(
        np.float32
    )
    with av.open(path, mode="w") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        frame_size = 1024
        for start in range(0, samples.size, frame_size):
            chunk = samples[None, start : start + frame_size]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_truncated_copy(src: str | os.PathLike, dst: str | os.PathLike, keep_fraction: float = 0.5) -> Path:
    """Copy the first ``keep_fraction`` of ``src``'s bytes to ``dst``: a download cut off mid-stream.

    For an MP4 written with ``faststart=True`` the index survives and still announces every frame, so the
    file opens but the frames after the cut cannot be decoded. Without faststart the index (at the end) is
    lost and the file cannot be opened at all.
    """
    data = Path(src).read_bytes()
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[: int(len(data) * keep_fraction)])
    return dst


def write_one_frame_video(path: str | os.PathLike, size: tuple[int, int] = (64, 64), **kwargs) -> Path:
    """A valid video with exactly one frame (index 0)."""
    return write_index_video(path, num_frames=1, size=size, **kwargs)


def write_bad_files(folder: str | os.PathLike) -> dict[str, Path]:
    """Write one of each bad input into ``folder``. Returns ``{kind: path}``.

    Kinds: ``empty``, ``text``, ``audio_only``, ``truncated`` (faststart MP4 cut in half: opens, later frames
    missing), ``truncated_no_index`` (plain MP4 cut in half: cannot be opened).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    full = write_index_video(folder / "_full_faststart.mp4", 60, (64, 64), gop=10, faststart=True)
    plain = write_index_video(folder / "_full_plain.mp4", 60, (64, 64), gop=10)
    files = {
        "empty": write_empty_file(folder / "empty.mp4"),
        "text": write_text_as_video(folder / "text.mp4"),
        "audio_only": write_audio_only(folder / "audio_only.mp4"),
        "truncated": write_truncated_copy(full, folder / "truncated.mp4", 0.5),
        "truncated_no_index": write_truncated_copy(plain, folder / "truncated_no_index.mp4", 0.5),
    }
    full.unlink()
    plain.unlink()
    return files
