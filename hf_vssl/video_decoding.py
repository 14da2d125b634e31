"""Frame-exact video decoding with PyAV.

A :class:`VideoReader` opens a video once, demuxes its packet list (cheap: no decoding) to learn the exact
presentation timestamp of every frame, and then decodes any set of frame indices by seeking to the keyframe
before each wanted run and decoding only as far as the last wanted frame of the run.

Frame index ``i`` always means "the ``i``-th frame in presentation order". Indices are mapped to timestamps
through the demuxed packet timestamps, never through ``fps`` arithmetic, so variable-frame-rate videos, B-frame
reordering and MP4 edit lists are handled exactly. Where the timestamps are decode counters rather than display
times (AVI with B-frames), the display order is learned once from the decoder's output order, and a decoder
output that disagrees with the table ends the read with ``"unknown frame order"`` instead of wrong frames.
Frames come back in display orientation (rotation metadata applied) as ``uint8`` RGB arrays ``[N, H, W, 3]``;
``size=(height, width)`` resizes inside FFmpeg's pixel format conversion (swscale), which costs about as much as
the conversion alone.

A path with a URL scheme other than ``file://`` is handed to FFmpeg, which opens the protocols it knows
(``http``, ``https``, ...). Broken inputs raise :class:`VideoDecodeError` naming the file.
"""

from __future__ import annotations

import bisect
import contextlib
import io
import os
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import av
import numpy as np

__all__ = ["VideoDecodeError", "VideoInfo", "VideoReader", "read_frames", "video_source_name"]

VideoSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO | dict

# Decoder threading. Measured on 2 shared cores (see the module docstring of benchmarks or the test report):
# frame threading adds a pipeline delay of `thread_count` frames that every seek pays again, and slice
# threading only helps large frames; data loading already runs one worker per core. So one thread per reader.
DEFAULT_THREAD_TYPE = "NONE"
DEFAULT_THREAD_COUNT = 1
SWSCALE_THREADS = 1  # FFmpeg's threaded swscale is not bit-reproducible for every conversion
# Display-order tables learned by decoding a whole file (AVI with B-frames): a data loader reopens the same file
# for every clip, and the scan costs a full decode, so each process keeps the latest ones by file identity.
MAX_SCANNED_TABLES = 256
_SCANNED_TABLES: dict[tuple, _FrameTable] = {}


class VideoDecodeError(ValueError):
    """A video that cannot be used: unreadable, empty, no video stream, truncated, or indices out of range.

    Attributes:
        source: the file name or dataset key of the video.
        reason: a short, stable category (``"empty file"``, ``"cannot open"``, ``"no video stream"``,
            ``"truncated"``, ``"decode failed"``, ``"unknown frame order"``, ``"index out of range"``); good for
            counting.
        detail: free-form details (FFmpeg's message, the failing index, ...).
    """

    def __init__(self, source: str, reason: str, detail: str | None = None):
        self.source = str(source)
        self.reason = reason
        self.detail = detail
        message = f"cannot decode video '{self.source}': {reason}"
        super().__init__(f"{message} ({detail})" if detail else message)

    def __reduce__(self):  # picklable across DataLoader worker processes
        return (type(self), (self.source, self.reason, self.detail))


@dataclass(frozen=True)
class VideoInfo:
    """Stream facts of an opened video.

    Attributes:
        num_frames: exact number of frames (presentation order positions ``0 .. num_frames - 1``).
        fps: average frame rate (frames / duration); informative only, never used to locate frames.
        height: display height in pixels, after rotation metadata is applied.
        width: display width in pixels, after rotation metadata is applied.
    """

    num_frames: int
    fps: float
    height: int
    width: int


def video_source_name(src: Any, name: str | None = None) -> str:
    """A human-readable name for ``src`` used in errors and warnings."""
    if name is not None:
        return str(name)
    if isinstance(src, dict):
        return str(src.get("path") or "<video bytes>")
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src)
    if isinstance(src, (bytes, bytearray, memoryview)):
        return "<video bytes>"
    return str(getattr(src, "name", "<video file object>"))


def _as_av_input(src: Any, name: str) -> str | BinaryIO:
    """Normalise a video source to something ``av.open`` accepts, raising clear errors for empty inputs."""
    if isinstance(src, dict):
        data, path = src.get("bytes"), src.get("path")
        if data is not None:
            src = data
        elif path:
            src = path
        else:
            raise VideoDecodeError(name, "cannot open", "video entry has neither bytes nor path")
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise VideoDecodeError(name, "empty file", "0 bytes")
        return io.BytesIO(src)
    if isinstance(src, (str, os.PathLike)):
        path = os.fspath(src)
        if "://" in path and not path.startswith("file://"):
            return path  # a URL: FFmpeg's own protocols open it (the data engine reads hf:// and the like itself)
        path = path.removeprefix("file://")
        try:
            size = os.path.getsize(path)
        except OSError as err:
            raise VideoDecodeError(
                name, "cannot open", f"{type(err).__name__}: {err.strerror or err}"
            ) from None
        if size == 0:
            raise VideoDecodeError(name, "empty file", "0 bytes")
        return path
    if hasattr(src, "read"):
        return src
    raise TypeError(f"Unsupported video source type {type(src).__name__} for '{name}'")


@dataclass
class _FrameTable:
    """Presentation-order timeline of a stream built from demuxed packets (no decoding)."""

    # Timestamps of the frames whose position is known for sure, in presentation order: the sorted packet
    # timestamps, or for decode-order timestamps (AVI with B-frames) the order the decoder output them in.
    pts: list[int]
    keyframes: list[int]  # presentation indices of keyframes (ascending)
    num_frames: int  # frames the file announces/contains (>= len(pts) when truncated)
    truncated: bool
    rotation: int  # counter-clockwise display rotation in degrees (0, 90, 180, 270)
    timed: bool  # False: timestamps unusable, frames are counted in decode output order from the start


class VideoReader:
    """Random access to the frames of one video.

    Args:
        src: a path, the encoded ``bytes``, a binary file object, or a ``datasets`` video entry
            ``{"bytes": bytes | None, "path": str | None}`` (bytes win when both are set).
        name: name used in errors/warnings (default: the path, or ``"<video bytes>"``).
        thread_type: FFmpeg decoder threading, ``"NONE"`` (default), ``"SLICE"``, ``"FRAME"`` or ``"AUTO"``.
        thread_count: decoder threads (0 = FFmpeg's choice); ignored for ``"NONE"``.

    Use as a context manager (or call :meth:`close`) so the file is released promptly::

        with VideoReader(path) as reader:
            clip = reader.get_frames(range(0, 32, 2), size=(128, 171))   # uint8 [16, 128, 171, 3]

    Raises:
        VideoDecodeError: the input is empty, cannot be opened, or has no video stream.
    """

    def __init__(
        self,
        src: VideoSource,
        name: str | None = None,
        *,
        thread_type: str = DEFAULT_THREAD_TYPE,
        thread_count: int = DEFAULT_THREAD_COUNT,
    ):
        self.name = video_source_name(src, name)
        self._container = None
        self._reformatter = av.video.reformatter.VideoReformatter()
        self._sws_threads = SWSCALE_THREADS
        self._thread_type, self._thread_count = thread_type.upper(), thread_count
        self._input = _as_av_input(src, self.name)
        # Where a file object's video starts, so that it can be reopened (None: it cannot seek back).
        self._input_start = None
        if not isinstance(self._input, str) and getattr(self._input, "seekable", lambda: False)():
            self._input_start = self._input.tell()
        try:
            self._open()
            self._format_name = self._container.format.name
            with self._av_errors_as("cannot open"):
                self._table = self._build_frame_table()
            self._pts_to_index = {pts: i for i, pts in enumerate(self._table.pts)}
            self.info = self._make_info()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------------------------------------------
    # lifecycle
    # ------------------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the container (file handle and FFmpeg buffers). Safe to call twice."""
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # never raise from a finaliser
            pass

    def __repr__(self) -> str:
        return (
            f"VideoReader({self.name!r}, {self.info})" if hasattr(self, "info") else "VideoReader(<closed>)"
        )

    @property
    def rotation(self) -> int:
        """Counter-clockwise display rotation in degrees that is applied to every returned frame."""
        return self._table.rotation

    @property
    def keyframe_indices(self) -> list[int]:
        """Presentation indices of the keyframes (seek points); ``[0]`` for streams without timestamps."""
        return list(self._table.keyframes)

    @property
    def container_format(self) -> str:
        """FFmpeg demuxer name(s), e.g. ``"mov,mp4,m4a,3gp,3g2,mj2"`` or ``"matroska,webm"``."""
        return self._format_name

    @property
    def decodable_frames(self) -> int:
        """Frames that can actually be decoded: ``info.num_frames`` unless the file is truncated."""
        return len(self._table.pts) if self._table.timed else self._table.num_frames

    # ------------------------------------------------------------------------------------------------------
    # opening
    # ------------------------------------------------------------------------------------------------------
    def _open(self) -> None:
        """Open the input, or reopen it from its first byte, and select the video stream."""
        rewind = self._container is not None and not isinstance(self._input, str)
        self.close()
        if rewind and self._input_start is None:
            raise VideoDecodeError(self.name, "decode failed", "cannot rewind a non-seekable file object")
        try:
            if rewind:
                self._input.seek(self._input_start)
            self._container = av.open(self._input, mode="r", metadata_errors="ignore")
        except (av.FFmpegError, OSError, ValueError) as err:
            raise VideoDecodeError(self.name, "cannot open", str(err)) from None
        if not self._container.streams.video:
            kinds = sorted({s.type for s in self._container.streams}) or ["none"]
            raise VideoDecodeError(self.name, "no video stream", f"streams: {', '.join(kinds)}")
        self._stream = self._container.streams.video[0]
        if self._thread_type == "NONE":
            self._stream.thread_count = 1  # PyAV's default would be slice threads on every core
        else:
            self._stream.thread_type = self._thread_type
            self._stream.thread_count = self._thread_count

    @contextlib.contextmanager
    def _av_errors_as(self, reason: str) -> Iterator[None]:
        """Turn FFmpeg and I/O failures into :class:`VideoDecodeError`, the one error the data loader skips
        files for; anything else (a bug) still propagates."""
        try:
            yield
        except (av.FFmpegError, OSError) as err:
            raise VideoDecodeError(self.name, reason, f"{type(err).__name__}: {err}") from err

    def _build_frame_table(self) -> _FrameTable:
        stream = self._stream
        entries: list[tuple[int | None, int | None, bool]] = []  # (pts, dts, keyframe), decode order
        truncated = False
        discarded = 0
        empty = 0
        frames_end = 0  # where the last frame's display ends, when packets carry durations
        rotation = None
        corrupt_pts: list[int] = []  # MPEG-PS flags damaged packets at a cut that later packets follow
        try:
            for packet in self._container.demux(stream):
                if packet.size == 0:  # end-of-stream flush marker, or a frame an AVI records as dropped
                    empty += packet.pts is not None
                    continue
                if packet.is_corrupt:  # a partial packet at the end of a cut-off file
                    truncated = True
                    if packet.pts is not None:
                        corrupt_pts.append(packet.pts)
                    continue
                if packet.is_discard:  # edit-list pre-roll: decoded but never shown
                    discarded += 1
                    continue
                entries.append((packet.pts, packet.dts, packet.is_keyframe))
                if packet.pts is not None:
                    frames_end = max(frames_end, packet.pts + (packet.duration or 0))
                if rotation is None and packet.is_keyframe:
                    # The display matrix reaches us only on decoded frames: decode this one keyframe (drained
                    # at once, not after the B-frame delay) while demuxing; later seeks reset the decoder.
                    rotation = self._keyframe_rotation(packet)
        except av.FFmpegError:
            truncated = True
        if not entries:
            raise VideoDecodeError(
                self.name, "truncated" if truncated else "decode failed", "no video frames"
            )
        # The declared frame count is no evidence of a cut: AVI counts dropped frames, an MP4 edit list may
        # show fewer frames than it stores. A sample index that locates frames past the end of the file is.
        if not truncated and len(stream.index_entries) > len(entries) + discarded:
            truncated = self._index_beyond_end_of_file()
        if not truncated and "matroska" in self._format_name:
            truncated = self._matroska_segment_beyond_end_of_file()
        declared = max(int(stream.frames or 0), 0)

        all_pts = [pts for pts, _, _ in entries]
        timed = None not in all_pts and len(set(all_pts)) == len(all_pts)
        if not timed:
            # No usable timestamps (raw streams, some AVIs): positions are counted from the start.
            keys = [i for i, (_, _, key) in enumerate(entries) if key] or [0]
            return _FrameTable([], keys[:1], len(entries), truncated, rotation or 0, timed=False)

        pts_sorted = sorted(all_pts)
        step = self._frame_step(pts_sorted)
        declared_end = self._declared_end()
        shown_end = max(frames_end, pts_sorted[-1])  # a last frame may stay on screen long (a slideshow)
        if not truncated and step and declared_end is not None and declared_end > shown_end + 3 * step:
            # The file says it lasts well beyond its last frame: a cut between two whole packets (Matroska
            # writes its duration in the header) that nothing else shows.
            truncated = True
            declared = max(declared, round((declared_end - pts_sorted[0]) / step))
        if pts_sorted == all_pts and self._stream.codec_context.has_b_frames:
            # Timestamps that never go back in decode order although the codec reorders frames are decode
            # counters (AVI stores no presentation times), not display times: learn the order from the decoder.
            # A clean cut shows only in the count the header declares (which includes dropped frames).
            truncated = truncated or declared > len(entries) + empty
            file_id = self._file_identity()
            table = _SCANNED_TABLES.get(file_id) if file_id else None
            if table is None:
                table = self._scan_display_order(entries, truncated, declared, rotation or 0)
                if file_id:
                    _SCANNED_TABLES[file_id] = table
                    while len(_SCANNED_TABLES) > MAX_SCANNED_TABLES:
                        _SCANNED_TABLES.pop(next(iter(_SCANNED_TABLES)))
            return table
        last_dts = entries[-1][1]
        if not truncated and declared_end is None and pts_sorted != all_pts:
            # Without a declared duration to check against, only the frame steps can tell (a known duration
            # that the frames reach is trusted: a long last frame, as in a slideshow, is no cut).
            truncated = _reordered_tail_has_a_hole(pts_sorted, last_dts)
        if truncated:
            # Frames missing after the cut all have pts >= their dts > the last readable dts, so frames up to
            # that timestamp are exactly positions 0..k-1; readable frames after it may have unknown gaps.
            limit = last_dts if last_dts is not None else max(p for p, _, key in entries if key)
            if corrupt_pts:
                limit = min(limit, min(corrupt_pts) - 1)  # a damaged frame still holds a position
            pts_sorted = pts_sorted[: bisect.bisect_right(pts_sorted, limit)]
            if not pts_sorted:
                raise VideoDecodeError(self.name, "truncated", "no frame decodes before the cut")
        position = {pts: i for i, pts in enumerate(pts_sorted)}
        keyframes = sorted(position[pts] for pts, _, key in entries if key and pts in position)
        if not keyframes or keyframes[0] != 0:
            keyframes.insert(0, 0)  # decoding must start at the first packet anyway
        num_frames = max(declared, len(all_pts)) if truncated else len(pts_sorted)
        return _FrameTable(pts_sorted, keyframes, num_frames, truncated, rotation or 0, timed=True)

    def _file_identity(self) -> tuple | None:
        """``(path, size, mtime)`` of a local file input (``None`` for bytes, file objects and URLs)."""
        if not isinstance(self._input, str) or "://" in self._input:
            return None
        try:
            stat = os.stat(self._input)
        except OSError:
            return None
        return (os.path.abspath(self._input), stat.st_size, stat.st_mtime_ns)

    def _scan_display_order(
        self, entries: list[tuple[int, int | None, bool]], truncated: bool, declared: int, rotation: int
    ) -> _FrameTable:
        """Decode the whole stream once: the decoder outputs frames in display order, each carrying the
        timestamp of its own packet, so the output sequence is the display-order table of packet timestamps.

        Frames the decoder drains at the end of a cut-off file are left out: it outputs whatever it still
        holds, whether or not a frame between them was lost. A stream whose output is not one frame per packet
        is refused, since no order can then be trusted.
        """
        self._open()
        packet_pts = {pts for pts, _, _ in entries}
        order: list[int] = []
        try:
            for packet in self._container.demux(self._stream):
                if packet.is_corrupt or packet.is_discard:
                    continue
                try:
                    frames = packet.decode()
                except av.InvalidDataError:
                    frames = []
                if packet.size == 0 and truncated:
                    break  # the drain after a cut: not a prefix of the display order
                order.extend(frame.pts for frame in frames)
        except av.FFmpegError:
            truncated = True
        complete = len(order) == len(set(order)) and set(order) <= packet_pts
        if not complete or (not truncated and len(order) != len(entries)):
            raise VideoDecodeError(
                self.name,
                "unknown frame order",
                f"the packet timestamps are in decode order and the decoder returned {len(order)} frames for "
                f"{len(entries)} packets, so display positions cannot be established",
            )
        if not order:
            raise VideoDecodeError(self.name, "truncated", "no frame decodes before the cut")
        position = {pts: i for i, pts in enumerate(order)}
        keyframes = sorted(position[pts] for pts, _, key in entries if key and pts in position)
        if not keyframes or keyframes[0] != 0:
            keyframes.insert(0, 0)
        num_frames = max(declared, len(entries)) if truncated else len(order)
        return _FrameTable(order, keyframes, num_frames, truncated, rotation, timed=True)

    def _frame_step(self, pts_sorted: list[int]) -> float:
        """A typical frame duration in time-base units (0: unknown)."""
        if len(pts_sorted) > 1:
            return float(np.median(np.diff(pts_sorted)))
        rate, time_base = self._stream.average_rate or self._stream.guessed_rate, self._stream.time_base
        return float(1 / (rate * time_base)) if rate and time_base else 0.0

    def _declared_end(self) -> float | None:
        """Where the container says the video ends, in stream time-base units (None: unknown, or other
        streams such as a longer audio track could be what the duration measures)."""
        container, stream = self._container, self._stream
        if len(container.streams) != 1 or not container.duration or not stream.time_base:
            return None
        start = stream.start_time or 0
        return start + container.duration / 1_000_000 / float(stream.time_base)

    def _matroska_segment_beyond_end_of_file(self) -> bool:
        """A Matroska file written to a seekable output declares its segment's size in the header: a file that
        ends before the segment does was cut, even exactly between two frames."""
        size = self._container.size
        head = self._read_head(64)
        if size <= 0 or head is None:
            return False
        position = 0
        for element in (b"\x1a\x45\xdf\xa3", b"\x18\x53\x80\x67"):  # EBML header, then Segment
            if head[position : position + 4] != element:
                return False
            length, value = _ebml_size(head, position + 4)
            if length == 0 or value is None:
                return False  # malformed, or a live stream's "unknown" size
            position += 4 + length
            if element == b"\x18\x53\x80\x67":
                return position + value > size
            position += value
        return False

    def _read_head(self, count: int) -> bytes | None:
        """The input's first ``count`` bytes, without disturbing the open container (None: not readable)."""
        if isinstance(self._input, str):
            if "://" in self._input:
                return None
            with open(self._input, "rb") as handle:
                return handle.read(count)
        if self._input_start is None:
            return None
        data = self._input.getvalue() if isinstance(self._input, io.BytesIO) else None
        if data is not None:
            return data[self._input_start : self._input_start + count]
        return None

    def _index_beyond_end_of_file(self) -> bool:
        # A file cut exactly between two packets demuxes cleanly, only shorter; its index (MP4 moov at the
        # front, for example) still tells where the missing packets were.
        size = self._container.size
        if size <= 0:  # unknown: a non-seekable input
            return False
        return any(entry.pos + entry.size > size for entry in self._stream.index_entries if entry.pos >= 0)

    def _keyframe_rotation(self, packet: av.Packet) -> int:
        try:
            frames = self._stream.decode(packet) or self._stream.decode(None)
        except av.FFmpegError:
            return 0
        return _normalise_rotation(frames[0].rotation) if frames else 0

    def _make_info(self) -> VideoInfo:
        ctx = self._stream.codec_context
        height, width = int(ctx.height), int(ctx.width)
        if self._table.rotation in (90, 270):
            height, width = width, height
        return VideoInfo(self._table.num_frames, self._average_fps(), height, width)

    def _average_fps(self) -> float:
        table, stream = self._table, self._stream
        if table.timed and len(table.pts) > 1 and stream.time_base:
            duration = (table.pts[-1] - table.pts[0]) * float(stream.time_base)
            if duration > 0:
                return (len(table.pts) - 1) / duration
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        return float(rate) if rate else 0.0

    # ------------------------------------------------------------------------------------------------------
    # decoding
    # ------------------------------------------------------------------------------------------------------
    def get_frames(
        self, indices: Sequence[int] | np.ndarray, size: tuple[int, int] | None = None
    ) -> np.ndarray:
        """Decode the frames at ``indices`` (presentation order), in the order given.

        Args:
            indices: integer frame positions in ``[0, info.num_frames)``; any order, repeats allowed.
            size: optional ``(height, width)`` of the returned frames (display orientation); the resize runs
                inside the YUV->RGB conversion.

        Returns:
            ``uint8`` array ``[len(indices), H, W, 3]`` (RGB).

        Raises:
            VideoDecodeError: an index is out of range, or a wanted frame cannot be decoded (truncated or
                damaged file).
        """
        if self._container is None:
            raise ValueError(f"VideoReader for '{self.name}' is closed")
        wanted = self._check_indices(indices)
        out_h, out_w = (self.info.height, self.info.width) if size is None else (int(size[0]), int(size[1]))
        if out_h <= 0 or out_w <= 0:
            raise ValueError(f"size must be positive (height, width), got {size}")
        out = np.empty((wanted.size, out_h, out_w, 3), dtype=np.uint8)
        if wanted.size == 0:
            return out
        unique, inverse = np.unique(wanted, return_inverse=True)
        # positions in `out` for each unique index, as slices of one argsort (no per-frame Python search)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(unique.size + 1))
        with self._av_errors_as("decode failed"):
            for k, frame in enumerate(self._decode_sorted(unique.tolist())):
                self._convert_into(frame, out, order[bounds[k] : bounds[k + 1]], out_h, out_w)
        return out

    def iter_frames(self, size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
        """Yield every frame in presentation order as ``uint8`` ``[H, W, 3]`` (for re-encoding whole videos).

        A truncated file raises `VideoDecodeError` before the first frame, so no copy of it is cut short silently.
        """
        out_h, out_w = (self.info.height, self.info.width) if size is None else (int(size[0]), int(size[1]))
        buffer = np.empty((1, out_h, out_w, 3), dtype=np.uint8)
        with self._av_errors_as("decode failed"):
            for frame in self._decode_sorted(list(range(self.info.num_frames))):
                self._convert_into(frame, buffer, [0], out_h, out_w)
                yield buffer[0].copy()

    def _check_indices(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        wanted = np.asarray(indices)
        if wanted.dtype.kind == "f":
            if not np.all(np.isfinite(wanted)) or np.any(wanted != np.round(wanted)):
                raise ValueError(f"frame indices for '{self.name}' must be integers, got {wanted[:8]}")
        elif wanted.dtype.kind not in "iub" and wanted.size:
            raise ValueError(f"frame indices for '{self.name}' must be integers, got dtype {wanted.dtype}")
        wanted = wanted.astype(np.int64).reshape(-1)
        if wanted.size and (wanted.min() < 0 or wanted.max() >= self.info.num_frames):
            bad = wanted[(wanted < 0) | (wanted >= self.info.num_frames)]
            raise VideoDecodeError(
                self.name,
                "index out of range",
                f"indices {bad[:5].tolist()} not in [0, {self.info.num_frames})",
            )
        return wanted

    def _decode_sorted(self, targets: list[int]) -> Iterator[av.VideoFrame]:
        """Yield one decoded frame per target index; ``targets`` must be ascending and unique."""
        table = self._table
        if not table.timed:
            yield from self._decode_counted(targets)
            return
        if targets[-1] >= len(table.pts):
            first_missing = next(t for t in targets if t >= len(table.pts))
            raise VideoDecodeError(
                self.name,
                "truncated",
                f"frame {first_missing} of {table.num_frames} cannot be decoded; the file ends after "
                f"{len(table.pts)} decodable frames",
            )
        i = 0
        while i < len(targets):
            new_i = yield from self._decode_run(self._keyframe_before(targets[i]), targets, i)
            if new_i == i:
                # The seek was refused or landed after the keyframe (MPEG-TS lands on the second keyframe
                # when asked for the first): decode from the very start instead, which always works.
                new_i = yield from self._decode_run(None, targets, i)
            if new_i == i:
                reason = "truncated" if table.truncated else "decode failed"
                raise VideoDecodeError(
                    self.name,
                    reason,
                    f"frame {targets[i]} of {table.num_frames} was not produced by the decoder",
                )
            i = new_i

    def _keyframe_before(self, index: int) -> int:
        keys = self._table.keyframes
        return keys[bisect.bisect_right(keys, index) - 1]

    def _decode_run(
        self, key_index: int | None, targets: list[int], i: int
    ) -> Generator[av.VideoFrame, None, int]:
        """Seek to keyframe ``key_index`` (``None``: rewind to the start of the input) and decode forward,
        yielding the frames of ``targets[i:]``.

        The run ends when every target is done, when the next target lies behind a later keyframe (seeking
        there is cheaper than decoding the gap), when a target was skipped by the decoder, or at the end of
        the stream. Returns the position in ``targets`` of the first target not yet yielded.
        """
        if key_index is None:
            self._open()
        elif not self._seek_to(key_index):
            return i
        pts_to_index = self._pts_to_index
        previous = -1
        for frame in self._demux_decode():
            index = pts_to_index.get(frame.pts) if frame.pts is not None else None
            if index is None or index == previous:
                continue
            if index < previous:
                # The decoder outputs display order; a table that disagrees would hand out wrong frames.
                raise VideoDecodeError(
                    self.name,
                    "unknown frame order",
                    f"the decoder returned frame {index} after frame {previous}: the timestamps do not give "
                    "the display order",
                )
            previous = index
            if index < targets[i]:
                continue
            if index > targets[i]:
                return i  # targets[i] was never output: seek landed late, or the frame is damaged
            yield frame
            i += 1
            if i == len(targets) or self._keyframe_before(targets[i]) > index + 1:
                return i
        return i

    def _seek_to(self, key_index: int) -> bool:
        """Position the demuxer on keyframe ``key_index`` (or before it); False if the container refuses."""
        try:
            self._container.seek(
                self._table.pts[key_index], stream=self._stream, backward=True, any_frame=False
            )
            return True
        except av.FFmpegError:
            return False  # the caller rewinds to the start instead

    def _demux_decode(self) -> Iterator[av.VideoFrame]:
        """Decoded frames from the current demuxer position; corrupt packets are dropped, not fed."""
        stream = self._stream
        try:
            for packet in self._container.demux(stream):
                if packet.is_corrupt:
                    continue
                try:
                    # packet.decode() also handles the final empty packet, which flushes delayed frames
                    yield from packet.decode()
                except av.InvalidDataError:
                    continue  # damaged packet; the frames it would have produced are reported missing later
        except av.FFmpegError:
            return  # demuxer hit the cut in a truncated file

    def _decode_counted(self, targets: list[int]) -> Iterator[av.VideoFrame]:
        # Untimed streams: decode from the very start and count output frames. Reopen rather than seek:
        # demuxers of raw streams refuse to seek (EPERM), even back to the start.
        self._open()
        wanted = iter(targets)
        target = next(wanted)
        for index, frame in enumerate(self._demux_decode()):
            if index == target:
                yield frame
                target = next(wanted, None)
                if target is None:
                    return
        raise VideoDecodeError(
            self.name, "truncated", f"frame {target} of {self._table.num_frames} never decoded"
        )

    def _convert_into(self, frame: av.VideoFrame, out: np.ndarray, rows, out_h: int, out_w: int) -> None:
        rotation = self._table.rotation
        conv_h, conv_w = (out_w, out_h) if rotation in (90, 270) else (out_h, out_w)
        rgb = self._reformatter.reformat(
            frame, width=conv_w, height=conv_h, format="rgb24", threads=self._sws_threads
        )
        array = rgb.to_ndarray()
        if rotation:
            array = np.rot90(array, k=rotation // 90)
        out[rows] = array


def _reordered_tail_has_a_hole(pts_sorted: list[int], last_dts: int | None) -> bool:
    """Whether a constant-frame-rate stream with B-frames lost frames at its end without a damaged packet to
    show for it: a file cut between two whole packets keeps a reference frame whose B-frames are gone, so the
    step between the frames shown after the last decode timestamp widens. (A variable frame rate is no sign.)
    """
    if last_dts is None or len(pts_sorted) < 3:
        return False
    steps = np.diff(pts_sorted)
    start = max(bisect.bisect_left(pts_sorted, last_dts) - 1, 0)
    before, tail = steps[:start], steps[start:]
    return bool(before.size > 1 and tail.size and before.min() == before.max() < tail.max())


def _ebml_size(data: bytes, position: int) -> tuple[int, int | None]:
    """``(bytes used, value)`` of the EBML variable-size integer at ``position``; value ``None`` means
    "unknown size"; ``(0, None)`` when it cannot be read."""
    if position >= len(data) or data[position] == 0:
        return 0, None
    length = 8 - data[position].bit_length() + 1
    if position + length > len(data):
        return 0, None
    value = data[position] & (0xFF >> length)
    for byte in data[position + 1 : position + length]:
        value = (value << 8) | byte
    return length, None if value == (1 << (7 * length)) - 1 else value


def _normalise_rotation(degrees: float | int | None) -> int:
    if not degrees:
        return 0
    return int(round(float(degrees) / 90.0)) % 4 * 90


def read_frames(
    src: VideoSource,
    indices: Sequence[int] | np.ndarray,
    size: tuple[int, int] | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Open ``src``, decode ``indices`` (see :meth:`VideoReader.get_frames`) and close it again."""
    with VideoReader(src, name=name) as reader:
        return reader.get_frames(indices, size=size)
