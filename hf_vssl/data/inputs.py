"""Video inputs of the data engine: remote files read into memory, and the count of videos skipped as unusable.

Source examples carry ``{"bytes", "path"}`` video entries (``datasets.Video(decode=False)``); a streaming Hub
dataset gives paths such as ``hf://datasets/...``, which FFmpeg cannot open. :func:`fetch_remote_video` reads
those into memory (through ``datasets``' fsspec file opening) before :class:`~hf_vssl.video_decoding.VideoReader`
decodes them. This lives here rather than in :mod:`hf_vssl.video_decoding`, which travels with every checkpoint
and needs neither ``datasets`` nor the loader's bookkeeping.

:class:`SkippedVideos` is that bookkeeping: the data loader's skip-and-continue policy for bad videos.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from typing import Any

from ..video_decoding import VideoDecodeError

logger = logging.getLogger(__name__)

__all__ = ["SkippedVideos", "fetch_remote_video", "is_remote_path"]


def is_remote_path(path: str | os.PathLike) -> bool:
    """A path with a URL scheme other than ``file://`` (``hf://``, ``s3://``, ``https://`` ...)."""
    text = os.fspath(path)
    return "://" in text and not text.startswith("file://")


def fetch_remote_video(video: Any, name: str | None = None) -> Any:
    """``video`` ready for the decoder: a remote path read into memory, anything else unchanged.

    Args:
        video: a path, encoded bytes, a file object, or a ``{"bytes", "path"}`` entry (bytes win when set).
        name: the video's name in errors (default: its path).

    Returns:
        For a remote path, its bytes (an entry keeps its shape: ``{"bytes": data, "path": path}``).

    Raises:
        VideoDecodeError: the remote file cannot be read (``"cannot open"``), as for any unreadable video.
    """
    path = video.get("path") if isinstance(video, dict) and video.get("bytes") is None else video
    if not isinstance(path, (str, os.PathLike)) or not is_remote_path(path):
        return video
    url = os.fspath(path)
    try:
        from datasets.utils.file_utils import xopen
    except ImportError as err:
        raise VideoDecodeError(
            name or url, "cannot open", "remote paths need the `datasets` package"
        ) from err
    try:
        with xopen(url, "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise VideoDecodeError(name or url, "cannot open", f"{type(err).__name__}: {err}") from err
    return {"bytes": data, "path": url} if isinstance(video, dict) else data


class SkippedVideos:
    """Counts videos skipped by the bad-file policy and warns once per file.

    The data loader catches :class:`VideoDecodeError`, calls :meth:`record`, and moves on::

        skipped = SkippedVideos()
        try:
            clip = read_frames(fetch_remote_video(video, key), indices, name=key)
        except VideoDecodeError as err:
            skipped.record(err.source, err.reason)

    ``state_dict()`` / ``load_state_dict()`` let the counts survive checkpoint/resume (accelerate's
    ``register_for_checkpointing``).
    """

    MAX_REMEMBERED = 10_000  # sources remembered for "warn once"; counting continues past it

    def __init__(self, logger_: logging.Logger | None = None):
        self._logger = logger_ or logger
        self.count = 0
        self.by_reason: Counter[str] = Counter()
        self._warned: set[str] = set()

    def record(self, source: str | VideoDecodeError, reason: str | None = None) -> None:
        """Count one skipped video and log a warning naming it (once per distinct source)."""
        detail = None
        if isinstance(source, VideoDecodeError):
            source, reason, detail = source.source, reason or source.reason, source.detail
        reason = reason or "unknown"
        self.count += 1
        self.by_reason[reason] += 1
        if source not in self._warned:
            if len(self._warned) < self.MAX_REMEMBERED:
                self._warned.add(source)
            self._logger.warning(
                "Skipping video '%s': %s%s (%d skipped so far)",
                source,
                reason,
                f" ({detail})" if detail else "",
                self.count,
            )

    def merge(self, other: SkippedVideos | dict) -> None:
        """Add another counter (or its ``state_dict()``), e.g. one from each DataLoader worker."""
        state = other.state_dict() if isinstance(other, SkippedVideos) else other
        self.count += int(state["count"])
        self.by_reason.update(state["by_reason"])
        self._warned.update(state.get("sources", [])[: max(self.MAX_REMEMBERED - len(self._warned), 0)])

    def state_dict(self) -> dict:
        return {"count": self.count, "by_reason": dict(self.by_reason), "sources": sorted(self._warned)}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state["count"])
        self.by_reason = Counter(state["by_reason"])
        self._warned = set(state.get("sources", []))

    def __repr__(self) -> str:
        return f"SkippedVideos(count={self.count}, by_reason={dict(self.by_reason)})"
