"""Streaming video sources with one normalised schema.

Every source is a streaming :class:`datasets.IterableDataset` whose examples look like::

    {"video": {"bytes": bytes | None, "path": str | None},   # datasets.Video(decode=False)
     "label": int,                                           # -1 when unlabelled
     "key":   str}                                           # stable id of the video, no dots

whatever the data came as:

==================================  ========================================================================
``spec``                            read as
==================================  ========================================================================
folder of video files               ``IterableDataset.from_generator`` over chunks of paths (many shards;
                                    class sub-folders become a ``ClassLabel``; ``train/``, ``validation/``,
                                    ``test/`` sub-folders select the split)
folder / glob / file of ``.tar``    WebDataset shards (local or ``hf://``), one shard per tar
folder / glob / file of ``.parquet``  Parquet with a video column (struct ``bytes``/``path``)
folder with a dataset card          ``load_dataset(folder)``: exactly what a Hub dataset id does
Hub dataset id (``org/name``)       ``load_dataset(id, streaming=True)``
==================================  ========================================================================

Decoding is left to :mod:`hf_vssl.video_decoding` (PyAV); ``torchcodec`` is never needed.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import logging
import os
import random
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import datasets
from datasets import ClassLabel, Features, IterableDataset, Value, Video
from datasets.distributed import split_dataset_by_node

from ..cli import UsageError

logger = logging.getLogger(__name__)

__all__ = [
    "VIDEO_EXTENSIONS",
    "SOURCE_FEATURES_UNLABELLED",
    "align_labels",
    "load_video_source",
    "source_label_names",
    "source_num_videos",
    "split_source_for_process",
    "video_key_from_path",
    "list_video_files",
]

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpeg", ".mpg", ".ogv", ".flv", ".3gp")
SPLIT_ALIASES = {
    "train": ("train", "training"),
    "validation": ("validation", "val", "valid", "dev"),
    "test": ("test", "testing"),
}
_KNOWN_SPLIT_DIRS = {alias for aliases in SPLIT_ALIASES.values() for alias in aliases}
VIDEO_COLUMN_CANDIDATES = (
    "video",
    "mp4",
    "videos",
    "clip",
    "webm",
    "mkv",
    "avi",
    "mov",
    "m4v",
    "video_bytes",
)
LABEL_COLUMN_CANDIDATES = ("label", "labels", "cls", "class", "class_id", "label_id", "target", "category")
KEY_COLUMN_CANDIDATES = ("__key__", "key", "video_id", "youtube_id", "clip_id", "id", "uid")
DEFAULT_MAX_FOLDER_SHARDS = 1024
FOLDER_ORDER_SEED = 0

SOURCE_FEATURES_UNLABELLED = Features(
    {"video": Video(decode=False), "label": Value("int64"), "key": Value("string")}
)


# ----------------------------------------------------------------------------------------------------------
# keys
# ----------------------------------------------------------------------------------------------------------
def video_key_from_path(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """Stable sample key of a video file: its path without extension, dots replaced by ``_``.

    Relative to ``root`` when given (``root/dance/a.b.mp4`` -> ``"dance/a_b"``): the path under ``root`` as
    listed, so a symlink is keyed by its own path, never by its target's. Without ``root``, relative paths
    are kept whole and absolute paths / URLs keep their last two components (``.../dance/a.mp4`` ->
    ``"dance/a"``). Dots are removed because WebDataset splits member names at the first dot.
    """
    text = os.fspath(path)
    if root is not None:
        # the path under the root as written, never a symlink's target (which may lie outside the root)
        rel = PurePosixPath(Path(os.path.relpath(os.path.abspath(text), os.path.abspath(root))).as_posix())
    elif "://" in text or os.path.isabs(text):
        rel = PurePosixPath(*PurePosixPath(text.split("://")[-1]).parts[-2:])
    else:
        rel = PurePosixPath(Path(text).as_posix())
    stem = str(rel.with_suffix("")) if rel.suffix else str(rel)
    return sanitize_key(stem)


def sanitize_key(key: str) -> str:
    """Make ``key`` safe as a WebDataset key: no dots, no leading ``./`` or ``/``, no whitespace runs."""
    key = key.strip().replace("\\", "/").lstrip("./")
    return re.sub(r"\s+", "_", key.replace(".", "_"))


# ----------------------------------------------------------------------------------------------------------
# folder of videos
# ----------------------------------------------------------------------------------------------------------
def list_video_files(root: str | os.PathLike) -> list[Path]:
    """All video files under ``root`` (recursive, sorted, hidden files and folders skipped).

    Symlinked files and folders are followed, and listed under their own path below ``root`` (a link to a
    file elsewhere is a video of this folder); a folder link back to one of its own ancestors is a loop and is
    not entered. A dangling link is listed too, so that reading it fails under its own name.
    """
    root = Path(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        ancestors = _real_ancestors(root, Path(dirpath))
        keep = []
        for d in sorted(d for d in dirnames if not d.startswith(".")):
            if os.path.realpath(os.path.join(dirpath, d)) in ancestors:
                logger.warning(
                    "Not following %s: a link to its own ancestor folder", os.path.join(dirpath, d)
                )
            else:
                keep.append(d)
        dirnames[:] = keep
        found += [
            Path(dirpath, f)
            for f in filenames
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in VIDEO_EXTENSIONS
        ]
    return sorted(found)


def _real_ancestors(root: Path, folder: Path) -> set[str]:
    """Real paths of ``root``, ``folder`` and every folder between them (the walk's current branch)."""
    parts = folder.relative_to(root).parts
    return {os.path.realpath(root.joinpath(*parts[:k])) for k in range(len(parts) + 1)}


def _resolve_split_dir(root: Path, split: str) -> Path:
    for alias in SPLIT_ALIASES.get(split, (split,)):
        if (root / alias).is_dir():
            return root / alias
    present = sorted(d.name for d in root.iterdir() if d.is_dir() and d.name.lower() in _KNOWN_SPLIT_DIRS)
    if present:
        raise UsageError(
            f"Split '{split}' not found in video folder '{root}' (split folders there: {present})"
        )
    return root  # a plain folder is taken as the requested split


def _folder_examples(chunks: list[list[tuple[str, int, str]]]):
    for chunk in chunks:
        for path, label, key in chunk:
            yield {"video": {"bytes": None, "path": path}, "label": label, "key": key}


def _folder_source(root: Path, split: str, num_shards: int | None) -> IterableDataset:
    split_dir = _resolve_split_dir(root, split)
    files = list_video_files(split_dir)
    if not files:
        raise UsageError(f"No video files ({', '.join(VIDEO_EXTENSIONS)}) found under '{split_dir}'")
    rel_parts = [f.relative_to(split_dir).parts for f in files]
    class_names = sorted({parts[0] for parts in rel_parts if len(parts) > 1})
    class_index = {name: i for i, name in enumerate(class_names)}
    keys = unique_video_keys(files, split_dir)
    records = [
        (os.path.abspath(f), class_index[parts[0]] if len(parts) > 1 else -1, key)
        for f, parts, key in zip(files, rel_parts, keys)
    ]
    _check_unique_keys(keys, str(split_dir))
    # A fixed permutation (same on every run and process) so that classes are interleaved: sequential
    # readers such as `prepare` then write shards that mix classes instead of one class per shard.
    random.Random(FOLDER_ORDER_SEED).shuffle(records)
    num_shards = min(num_shards or DEFAULT_MAX_FOLDER_SHARDS, len(records))
    chunks = [records[k::num_shards] for k in range(num_shards)]
    label_feature = ClassLabel(names=class_names) if class_names else Value("int64")
    features = Features({"video": Video(decode=False), "label": label_feature, "key": Value("string")})
    dataset = IterableDataset.from_generator(
        _folder_examples, gen_kwargs={"chunks": chunks}, features=features, split=datasets.NamedSplit(split)
    )
    # A folder's length is known before reading it: progress bars can show an ETA from the first epoch.
    dataset.info.splits = datasets.SplitDict(
        {split: datasets.SplitInfo(name=split, num_examples=len(records))}
    )
    return dataset


def unique_video_keys(files: Sequence[Path], root: Path) -> list[str]:
    """One key per file under ``root``: :func:`video_key_from_path`, and where two files share it (``clip.mp4``
    next to ``clip.mkv``, or ``a.b.mp4`` next to ``a_b.mp4``) their extensions join the key, then, if they still
    clash, a hash of the path below ``root``. Every other key stays as it is."""
    keys = [video_key_from_path(f, root) for f in files]
    for attempt in ("extension", "hash"):
        counts = Counter(keys)
        for i, f in enumerate(files):
            if counts[keys[i]] > 1:
                rel = Path(os.path.relpath(os.path.abspath(f), os.path.abspath(root))).as_posix()
                if attempt == "extension":
                    keys[i] = sanitize_key(rel)
                else:
                    keys[i] = f"{keys[i]}_{hashlib.sha1(rel.encode()).hexdigest()[:8]}"
    return keys


def _check_unique_keys(keys: Sequence[str], where: str) -> None:
    duplicates = sorted(key for key, n in Counter(keys).items() if n > 1)
    if duplicates:
        raise UsageError(f"Videos under '{where}' map to duplicate keys {duplicates[:5]} (dots become '_')")


# ----------------------------------------------------------------------------------------------------------
# dispatch
# ----------------------------------------------------------------------------------------------------------
def _has_dataset_card(folder: Path) -> bool:
    readme = folder / "README.md"
    if not readme.is_file():
        return False
    head = readme.read_text(errors="ignore")[:20000]
    return head.startswith("---") and ("dataset_info:" in head or "configs:" in head)


def _files_with_suffix(folder: Path, suffix: str) -> list[Path]:
    return sorted(p for p in folder.rglob(f"*{suffix}") if p.is_file() and not p.name.startswith("."))


def _builder_for_pattern(pattern: str) -> str | None:
    name = pattern.lower().rsplit("/", 1)[-1]
    if ".tar" in name:
        return "webdataset"
    if ".parquet" in name:
        return "parquet"
    return None


def _load_raw(spec: str, split: str, num_shards: int | None) -> tuple[IterableDataset, bool]:
    """Return ``(dataset, already_normalised)`` for ``spec``."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if _has_dataset_card(path):
            return load_dataset_streaming(str(path), split=split), False
        if _files_with_suffix(path, ".tar"):
            return load_dataset_streaming("webdataset", data_dir=str(path), split=split), False
        if _files_with_suffix(path, ".parquet"):
            return load_dataset_streaming("parquet", data_dir=str(path), split=split), False
        if list_video_files(path):
            return _folder_source(path, split, num_shards), True
        raise UsageError(
            f"'{spec}' holds no video files, WebDataset .tar shards, Parquet files or dataset card"
        )
    if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
        raise UsageError(f"'{spec}' is a single video file; pass the folder that contains it")
    is_pattern = path.is_file() or any(ch in spec for ch in "*?[") or "://" in spec
    if is_pattern:
        builder = _builder_for_pattern(spec)
        if builder is None:
            raise UsageError(
                f"Cannot tell the format of '{spec}': expected .tar (WebDataset) or .parquet files"
            )
        if "://" not in spec and not globlib.glob(os.path.expanduser(spec)):
            raise FileNotFoundError(f"No files match '{spec}'")
        return load_dataset_streaming(builder, data_files={split: spec}, split=split), False
    if spec.startswith(("/", ".", "~")) or spec.count("/") > 1:
        raise FileNotFoundError(
            f"No such file or folder: '{spec}' (and it is not a Hub dataset id 'org/name')"
        )
    return load_dataset_streaming(spec, split=split), False


def load_dataset_streaming(*args, **kwargs) -> IterableDataset:
    """``datasets.load_dataset(..., streaming=True)`` for exactly one split."""
    dataset = datasets.load_dataset(*args, streaming=True, **kwargs)
    if not isinstance(dataset, IterableDataset):
        raise ValueError(f"load_dataset{args} did not return a single split; pass split=")
    return dataset


def load_video_source(
    spec: str | os.PathLike,
    split: str = "train",
    *,
    video_column: str | None = None,
    label_column: str | None = None,
    num_shards: int | None = None,
) -> IterableDataset:
    """Open any supported video collection as a normalised streaming dataset.

    Args:
        spec: a folder of videos, a folder / glob / file of WebDataset ``.tar`` shards or ``.parquet`` files
            (local or ``hf://``), a folder holding a dataset card (``README.md`` with ``dataset_info`` /
            ``configs``), or a Hub dataset id.
        split: split to read.
        video_column: column holding the video (detected when ``None``: a ``Video`` feature, a
            ``bytes``/``path`` struct, or a binary column named like a video extension).
        label_column: integer / ``ClassLabel`` label column (detected when ``None``; ``-1`` if there is none).
        num_shards: folder sources only: number of shards the file list is cut into (default
            ``min(num_files, 1024)``). Choose a multiple of ``world_size x dataloader workers``. Other
            sources have one shard per file; Parquet is split into row-group shards when ``num_shards``
            asks for more shards than there are files.

    Returns:
        ``IterableDataset`` with features ``{"video": Video(decode=False), "label": ClassLabel | int64,
        "key": string}``.
    """
    spec = os.fspath(spec)
    raw, normalised = _load_raw(spec, split, num_shards)
    if normalised:
        return raw
    dataset = normalise_video_dataset(raw, video_column=video_column, label_column=label_column, name=spec)
    if num_shards and dataset.num_shards < num_shards:
        resharded = dataset.reshard()
        if resharded.num_shards > dataset.num_shards:
            dataset = resharded
    return dataset


# ----------------------------------------------------------------------------------------------------------
# normalisation
# ----------------------------------------------------------------------------------------------------------
def _is_bytes_path_struct(feature: Any) -> bool:
    return isinstance(feature, dict) and set(feature) == {"bytes", "path"}


def _is_binary(feature: Any) -> bool:
    return isinstance(feature, Value) and feature.dtype in ("binary", "large_binary")


def _detect_video_column(features: Features, name: str) -> str:
    video_like = [c for c, f in features.items() if isinstance(f, Video) or _is_bytes_path_struct(f)]
    binary = [c for c, f in features.items() if _is_binary(f) and c.lower() in VIDEO_COLUMN_CANDIDATES]
    for candidates in (video_like, binary):
        if len(candidates) == 1:
            return candidates[0]
        for preferred in VIDEO_COLUMN_CANDIDATES:
            if preferred in candidates:
                return preferred
        if candidates:
            return candidates[0]
    raise UsageError(
        f"Cannot find a video column in '{name}' (columns: {list(features)}); pass video_column=. A video column "
        "is a datasets.Video feature, a struct with 'bytes' and 'path', or binary data named like an extension"
    )


def _detect_label_column(features: Features, exclude: str) -> str | None:
    class_labels = [c for c, f in features.items() if isinstance(f, ClassLabel) and c != exclude]
    for preferred in LABEL_COLUMN_CANDIDATES:
        if preferred in class_labels:
            return preferred
    if class_labels:
        return class_labels[0]
    for preferred in LABEL_COLUMN_CANDIDATES:
        feature = features.get(preferred)
        if preferred != exclude and isinstance(feature, Value) and feature.dtype.startswith(("int", "uint")):
            return preferred
    named = [c for c in LABEL_COLUMN_CANDIDATES if c != exclude and c in features]
    if named:  # e.g. class names as strings: not usable as ids, and silently unlabelled data would mislead
        logger.warning(
            "Column %r looks like labels but is %s, not integer or ClassLabel: the videos are read as "
            "unlabelled. Cast it to a ClassLabel, or pass label_column= to use it anyway.",
            named[0],
            features[named[0]],
        )
    return None


def _detect_key_column(features: Features, exclude: set[str]) -> str | None:
    for candidate in KEY_COLUMN_CANDIDATES:
        feature = features.get(candidate)
        if (
            candidate not in exclude
            and isinstance(feature, Value)
            and feature.dtype in ("string", "large_string")
        ):
            return candidate
    return None


def _key_from_video(video: dict) -> str:
    if video.get("path"):
        return video_key_from_path(video["path"])
    return hashlib.sha1(video["bytes"]).hexdigest()[:20]


def normalise_video_dataset(
    dataset: IterableDataset,
    *,
    video_column: str | None = None,
    label_column: str | None = None,
    key_column: str | None = None,
    name: str = "dataset",
) -> IterableDataset:
    """Map any streaming dataset with a video column to ``{"video", "label", "key"}`` (see module docstring)."""
    features = dataset.features
    if features is None:  # a builder that could not infer its schema: resolve it from the first examples
        dataset = dataset._resolve_features()
        features = dataset.features
    video_column = video_column or _detect_video_column(features, name)
    if video_column not in features:
        raise UsageError(f"video_column '{video_column}' not in '{name}' (columns: {list(features)})")
    if label_column is None:
        label_column = _detect_label_column(features, exclude=video_column)
    elif label_column not in features:
        raise UsageError(f"label_column '{label_column}' not in '{name}' (columns: {list(features)})")
    else:
        feature = features[label_column]
        if not isinstance(feature, ClassLabel) and not (
            isinstance(feature, Value) and feature.dtype.startswith(("int", "uint"))
        ):
            raise UsageError(
                f"label_column '{label_column}' of '{name}' has type {feature}; cast it to ClassLabel first "
                "(dataset.cast_column) so every process maps names to the same integers"
            )
    key_column = key_column or _detect_key_column(features, exclude={video_column, label_column})

    video_feature = features[video_column]
    if isinstance(video_feature, Video) or _is_bytes_path_struct(video_feature):
        dataset = dataset.cast_column(video_column, Video(decode=False))
    dataset = dataset.decode(False)  # other media columns (images, audio) must not need decoders either

    if label_column is not None and isinstance(features[label_column], ClassLabel):
        label_feature: Any = ClassLabel(names=features[label_column].names)
    else:
        label_feature = Value("int64")
    out_features = Features({"video": Video(decode=False), "label": label_feature, "key": Value("string")})
    is_binary = _is_binary(video_feature)

    def to_source_example(example: dict) -> dict:
        video = example[video_column]
        if is_binary:
            video = {"bytes": video, "path": None}
        elif video is None or (video.get("bytes") is None and not video.get("path")):
            video = {"bytes": None, "path": None}  # the decoder reports it as unreadable, naming the key
        label = example[label_column] if label_column is not None else -1
        key = example[key_column] if key_column is not None else None
        if not key:
            key = _key_from_video(video) if (video.get("path") or video.get("bytes")) else "<missing video>"
        return {"video": video, "label": -1 if label is None else int(label), "key": sanitize_key(str(key))}

    return dataset.map(to_source_example, remove_columns=list(features), features=out_features)


# ----------------------------------------------------------------------------------------------------------
# distribution and metadata
# ----------------------------------------------------------------------------------------------------------
def source_num_videos(dataset: IterableDataset) -> int | None:
    """The number of videos of ``dataset``'s split where its metadata says it (a folder source, a dataset card
    with split sizes), else None (a stream is counted by reading it)."""
    splits = dataset.info.splits
    if not splits or dataset.split is None or str(dataset.split) not in splits:
        return None
    return splits[str(dataset.split)].num_examples or None


def split_source_for_process(dataset: IterableDataset, rank: int, world_size: int) -> IterableDataset:
    """The part of ``dataset`` that process ``rank`` of ``world_size`` reads; every sample goes to one process.

    Whole shards are handed out when ``dataset.num_shards % world_size == 0`` (each process reads only its
    files). Otherwise every process reads every shard and keeps every ``world_size``-th example, which is
    correct but multiplies I/O, so a warning says so. Call this once per process and do not also let
    ``accelerate`` shard the DataLoader (splitting twice drops data).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"Need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if world_size == 1:
        return dataset
    if dataset.num_shards % world_size == 0:
        strategy = "shards"
    else:
        strategy = "examples"
        if rank == 0:
            logger.warning(
                "Source has %d shards, not a multiple of world_size=%d: every process reads all shards and keeps "
                "1/%d of the examples. Write a multiple of world_size x num_workers shards to avoid the extra I/O.",
                dataset.num_shards,
                world_size,
                world_size,
            )
    return split_dataset_by_node(dataset, rank=rank, world_size=world_size, strategy=strategy)


def source_label_names(dataset: IterableDataset) -> list[str] | None:
    """Class names of a source's ``label`` column (``None`` when labels are plain integers or absent)."""
    features = dataset.features or {}
    feature = features.get("label")
    return list(feature.names) if isinstance(feature, ClassLabel) else None


def align_labels(dataset: IterableDataset, label_names: list[str]) -> IterableDataset:
    """``dataset`` with its class ids renumbered to ``label_names``, matching classes by name.

    Every source numbers its own classes (a folder its sorted sub-folders, shards the order they were written
    with), so a validation folder that lacks one class, or shards written in another order, would otherwise
    give the same class different ids in training and test. Sources without class names are returned as they
    are (their integer labels are taken to mean the same thing); a class that ``label_names`` lacks is an error.
    """
    own = source_label_names(dataset)
    label_names = list(label_names)
    if own is None or own == label_names:
        return dataset
    missing = sorted(set(own) - set(label_names))
    if missing:
        raise UsageError(f"Classes {missing} are not among the training classes {label_names}.")
    renumber = [label_names.index(name) for name in own]
    features = dataset.features.copy()
    features["label"] = ClassLabel(names=label_names)
    return dataset.map(
        lambda example: {"label": renumber[example["label"]] if example["label"] >= 0 else -1},
        features=features,
    )
