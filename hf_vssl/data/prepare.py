"""Write any video source as WebDataset tar shards, optionally re-encoded for fast training-time decoding.

Usage::

    hf-vssl-prepare SRC OUT [--split train] [--short_side 128] [--gop 16]
        [--codec libx264|mpeg4] [--shard_size 500 | --num_shards N] [--num_workers 4]

(or ``python -m hf_vssl.data.prepare ...``; the former dashed spellings, ``--short-side``, still work)

``SRC`` is anything :func:`hf_vssl.data.sources.load_video_source` accepts (folder of videos, tar shards,
Parquet, dataset folder, Hub id). ``OUT`` receives, per split::

    OUT/{split}-00000.tar ...     members {key}.mp4, {key}.cls (label id), {key}.json (label name, source info)
    OUT/README.md                 dataset card: features (label names) and one config per split
    OUT/skipped.json              inputs skipped per split, unreadable or unwritable (also listed on stderr)
    OUT/.prepare-state.json       settings + completed shards, for resuming
    OUT/.prepare-plan-{split}.json  every input's key, in the order the shards hold them

Re-encoding (``--short_side``, ``--gop``, ``--codec``, ``--crf``; also forced for non-MP4 inputs) scales the
short side, applies rotation metadata, drops audio and puts a keyframe every ``--gop`` frames, so that a clip
anywhere in the video decodes after at most ``gop`` frames. Without it the original bytes are copied.

Shard count: ``--num_shards N`` writes exactly N shards of (near) equal size. Otherwise the count is
``ceil(videos / --shard_size)`` rounded up to a multiple of ``--shard_multiple`` (default 16), so that
``world_size x dataloader_workers`` in {1, 2, 4, 8, 16} divides it and every process gets whole shards.

Resume: a shard is written as ``*.tar.partial`` and renamed when complete; completed shards are recorded in
the state file. Rerunning the same command skips completed shards (no decoding) and rewrites a partial one.
The plan file records every input's key, in the order the shards hold them. When the source
changed before a rerun, the rerun continues that plan exactly (finding each planned video by its key) and names
the new videos it does not include; when a planned video is gone it refuses before writing anything. A local
``SRC`` is recorded as an absolute path, so a rerun may name it relative to another folder.

A source in which no video can be read is an error: its empty shards are removed, no dataset card is written,
and ``skipped.json`` lists every input with its reason.
"""

from __future__ import annotations

import argparse
import glob as globlib
import io
import json
import math
import os
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import av

from ..cli import CommandLineParser, UsageError, command_line
from ..video_decoding import VideoDecodeError, VideoReader
from .encoding import encode_video
from .inputs import fetch_remote_video
from .sources import load_video_source, sanitize_key, source_label_names

__all__ = [
    "PrepareSettings",
    "TarShardWriter",
    "prepare_shards",
    "write_dataset_card",
    "main",
]

STATE_FILE = ".prepare-state.json"
SKIPPED_FILE = "skipped.json"
CARD_FILE = "README.md"
MP4_FAMILY = {"mov", "mp4", "m4a", "3gp", "3g2", "mj2"}
JSON_FIELDS = {
    "key": "string",
    "label": "int64",
    "label_name": "string",
    "source": "string",
    "num_frames": "int64",
    "fps": "float64",
    "height": "int64",
    "width": "int64",
    "reencoded": "bool",
}


# ----------------------------------------------------------------------------------------------------------
# tar shards
# ----------------------------------------------------------------------------------------------------------
class TarShardWriter:
    """Write one WebDataset shard atomically: members go to ``path + ".partial"``, renamed on :meth:`close`.

    Members are written with fixed metadata (mtime 0, uid 0, mode 0644) so that the same inputs always give
    byte-identical shards. The PAX format stores names of any length and in any script (WebDataset readers
    accept it). Use as a context manager; an exception leaves only the ``.partial`` file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.partial_path = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tar = tarfile.open(self.partial_path, "w", format=tarfile.PAX_FORMAT)
        self.count = 0

    def write(self, key: str, video: bytes, label: int, meta: dict[str, Any], video_ext: str = "mp4") -> None:
        """Add one sample: ``{key}.{video_ext}``, ``{key}.cls`` and ``{key}.json`` (contiguous in the tar).

        Raises:
            ValueError: ``key`` is not a usable WebDataset key, or a member header cannot be encoded; nothing
                of the sample has been written then, so the caller may skip it and go on.
        """
        base = key.rsplit("/", 1)[-1]
        if "." in key or not base:
            raise ValueError(f"WebDataset keys need a file name without dots: {key!r}")
        if base.startswith("__"):
            # readers (datasets' webdataset builder) drop such members as hidden files
            raise ValueError(f"WebDataset readers skip keys whose file name starts with '__': {key!r}")
        members = [
            (f"{key}.{video_ext}", video),
            (f"{key}.cls", str(int(label)).encode()),
            (f"{key}.json", json.dumps(meta, sort_keys=True).encode()),
        ]
        infos = [self._member_info(name, len(data)) for name, data in members]
        for info in infos:
            # encode every header before writing anything, so a refused sample leaves no partial member
            info.tobuf(self._tar.format, self._tar.encoding, self._tar.errors)
        for info, (_, data) in zip(infos, members):
            self._tar.addfile(info, io.BytesIO(data))
        self.count += 1

    @staticmethod
    def _member_info(name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.uid, info.gid = size, 0, 0o644, 0, 0
        return info

    def close(self) -> Path:
        """Finish the tar and move it into place. Returns the final path."""
        self._tar.close()
        os.replace(self.partial_path, self.path)
        return self.path

    def abort(self) -> None:
        """Close without publishing (the ``.partial`` file stays for inspection and is rewritten on resume)."""
        self._tar.close()

    def __enter__(self) -> TarShardWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def plan_file_name(split: str) -> str:
    return f".prepare-plan-{split}.json"


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.tar"


def shard_boundaries(total: int, num_shards: int) -> list[int]:
    """Start offsets ``[b_0 = 0, ..., b_num_shards = total]`` of near-equal contiguous shards."""
    return [(j * total) // num_shards for j in range(num_shards + 1)]


def choose_num_shards(total: int, shard_size: int, multiple: int) -> int:
    """``ceil(total / shard_size)`` rounded up to a multiple of ``multiple``, but never more than ``total``."""
    if total <= 0:
        return 0
    wanted = math.ceil(total / max(shard_size, 1))
    wanted = math.ceil(wanted / max(multiple, 1)) * max(multiple, 1)
    return max(1, min(wanted, total))


# ----------------------------------------------------------------------------------------------------------
# encoding
# ----------------------------------------------------------------------------------------------------------
def even(x: float) -> int:
    return max(2, int(round(x / 2.0)) * 2)


def target_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """Output ``(height, width)``: short side scaled to ``short_side`` (aspect kept), both even (yuv420p)."""
    if short_side:
        scale = short_side / min(height, width)
        return even(height * scale), even(width * scale)
    return even(height), even(width)


@dataclass(frozen=True)
class PrepareSettings:
    """Everything that determines the content of the shards (a resume must use the same settings)."""

    source: str
    split: str = "train"
    short_side: int | None = None
    gop: int | None = None
    codec: str | None = None
    crf: int = 23
    fast_decode: bool = False
    video_column: str | None = None
    label_column: str | None = None

    @property
    def reencode(self) -> bool:
        return bool(self.short_side or self.gop or self.codec or self.fast_decode)


def _source_bytes(video: dict) -> bytes:
    """The original encoded bytes of a fetched video entry (a path left in it is a local file)."""
    if video.get("bytes") is not None:
        return video["bytes"]
    return Path(os.fspath(video["path"]).removeprefix("file://")).read_bytes()


def canonical_source(spec: str) -> str:
    """``spec`` as the settings record it: a local path or glob made absolute, so that a resume may name the
    same source relative to another folder; URLs and Hub ids as given."""
    spec = os.fspath(spec)
    if "://" in spec:
        return spec
    expanded = os.path.expanduser(spec)
    if os.path.exists(expanded) or (any(ch in spec for ch in "*?[") and globlib.glob(expanded)):
        return os.path.abspath(expanded)
    return spec


def prepare_sample(
    example: dict, settings: PrepareSettings, label_names: list[str] | None
) -> tuple[bytes, dict]:
    """Turn one source example into ``(mp4_bytes, json_meta)``; raises :class:`VideoDecodeError` if unreadable."""
    key = example["key"]
    video = fetch_remote_video(example["video"], key)
    with VideoReader(video, name=key) as reader:
        info = reader.info
        if reader.decodable_frames < info.num_frames:
            raise VideoDecodeError(
                key, "truncated", f"only {reader.decodable_frames}/{info.num_frames} frames"
            )
        is_mp4 = bool(MP4_FAMILY & set(reader.container_format.split(",")))
        reencode = settings.reencode or not is_mp4
        if reencode:
            size = target_size(info.height, info.width, settings.short_side)
            data = encode_video(
                reader.iter_frames(size=size),
                fps=info.fps,
                codec=settings.codec or "libx264",
                gop=settings.gop or 16,
                crf=settings.crf,
                preset="fast",
                fast_decode=settings.fast_decode,
            )
            out_h, out_w = size
        else:
            data = _source_bytes(video)
            out_h, out_w = info.height, info.width
    label = int(example["label"])
    meta = {
        "key": key,
        "label": label,
        "label_name": label_names[label] if label_names and 0 <= label < len(label_names) else None,
        "source": str(video.get("path") or key),
        "num_frames": info.num_frames,
        "fps": float(info.fps),
        "height": out_h,
        "width": out_w,
        "reencoded": reencode,
    }
    return data, meta


# ----------------------------------------------------------------------------------------------------------
# one shard
# ----------------------------------------------------------------------------------------------------------
@dataclass
class ShardResult:
    index: int
    count: int
    skipped: list[dict]
    complete: bool


def write_shard(
    out_dir: str,
    index: int,
    examples: list[dict],
    settings: PrepareSettings,
    label_names: list[str] | None,
    complete: bool = True,
) -> ShardResult:
    """Write shard ``index`` from ``examples``; publish it only if ``complete`` (else leave ``.partial``)."""
    skipped = []
    writer = TarShardWriter(Path(out_dir) / shard_name(settings.split, index))
    try:
        for example in examples:
            try:
                data, meta = prepare_sample(example, settings, label_names)
            except VideoDecodeError as err:
                skipped.append(_skip_record(example, err.reason, err.detail))
                continue
            except (av.FFmpegError, ValueError) as err:  # the re-encoder refused this video
                skipped.append(_skip_record(example, "encode failed", f"{type(err).__name__}: {err}"))
                continue
            try:
                writer.write(sanitize_key(example["key"]), data, meta["label"], meta)
            except ValueError as err:  # this sample's key or headers; I/O errors still abort the shard
                skipped.append(_skip_record(example, "write failed", str(err)))
    except BaseException:
        writer.abort()
        raise
    if complete:
        writer.close()
    else:
        writer.abort()
    return ShardResult(index, writer.count, skipped, complete)


def _skip_record(example: dict, reason: str, detail: str | None) -> dict:
    source = str(example["video"].get("path") or example["key"])
    return {"key": example["key"], "source": source, "reason": reason, "detail": detail}


# ----------------------------------------------------------------------------------------------------------
# state, card, skipped list
# ----------------------------------------------------------------------------------------------------------
def _read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.exists() else default


def _write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    os.replace(tmp, path)


def write_dataset_card(
    out_dir: str | os.PathLike, label_names: list[str] | None, splits: Iterable[str]
) -> Path:
    """Write ``README.md`` with ``dataset_info.features`` and one ``data_files`` entry per split.

    ``load_dataset(out_dir)`` (and the Hub, once pushed) then reads the shards with the label names as a
    ``ClassLabel``; :func:`~hf_vssl.data.sources.load_video_source` goes through exactly that path.
    """
    import yaml
    from datasets import ClassLabel, DatasetInfo, Features, Value, Video

    out_dir = Path(out_dir)
    label_feature = ClassLabel(names=list(label_names)) if label_names else Value("int64")
    features = Features(
        {
            "__key__": Value("string"),
            "__url__": Value("string"),
            "mp4": Video(),
            "cls": label_feature,
            "json": {name: Value(dtype) for name, dtype in JSON_FIELDS.items()},
        }
    )
    card = {
        "dataset_info": DatasetInfo(features=features)._to_yaml_dict(),
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": f"{s}-*.tar"} for s in sorted(set(splits))],
            }
        ],
        "tags": ["video", "webdataset", "hf_vssl"],
    }
    body = (
        "# Video shards\n\nWebDataset shards written by `python -m hf_vssl.data.prepare`: `{key}.mp4` (video), "
        "`{key}.cls` (label id), `{key}.json` (label name and source information).\n"
    )
    path = out_dir / CARD_FILE
    path.write_text("---\n" + yaml.safe_dump(card, sort_keys=False) + "---\n\n" + body)
    return path


# ----------------------------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------------------------
def _source_keys(source) -> list[str]:
    return [example["key"] for example in source.select_columns(["key"])]


def _grouped_by_plan(
    source: Iterable[dict], plan: list[str], boundaries: list[int], done: set[int], limit: int | None
) -> Iterator[tuple[int, list[dict], bool]]:
    """Like :func:`_grouped` for a source whose order changed since the plan was made: each example goes to
    its planned position (found by key), a shard is written once all of its videos have come, and examples
    the plan does not hold are passed over (the caller has reported them)."""
    position_of = {key: i for i, key in enumerate(plan)}
    shard_of = [j for j in range(len(boundaries) - 1) for _ in range(boundaries[j], boundaries[j + 1])]
    waiting: dict[int, dict[int, dict]] = {}
    taken = 0
    for example in source:
        position = position_of.get(example["key"])
        if position is None or shard_of[position] in done:
            continue
        if limit is not None and taken >= limit:
            return
        shard = shard_of[position]
        items = waiting.setdefault(shard, {})
        items[position] = example
        taken += 1
        if len(items) == boundaries[shard + 1] - boundaries[shard]:
            yield shard, [items[k] for k in sorted(items)], True
            del waiting[shard]
    if waiting and limit is None:
        raise ValueError(f"The source no longer yields {sum(map(len, waiting.values()))} planned videos")


def _grouped(
    source: Iterable[dict], boundaries: list[int], done: set[int], limit: int | None
) -> Iterator[tuple[int, list[dict], bool]]:
    """Yield ``(shard_index, examples, complete)`` for each shard not in ``done``, in order.

    Examples of completed shards are iterated past without decoding. With ``limit``, iteration stops after
    that many new examples and the shard in progress is yielded with ``complete=False``.
    """
    num_shards, total = len(boundaries) - 1, boundaries[-1]
    shard, items, taken, seen = 0, [], 0, 0
    for position, example in enumerate(source):
        seen = position + 1
        while shard < num_shards and position >= boundaries[shard + 1]:
            if shard not in done:
                yield shard, items, True
            shard, items = shard + 1, []
        if shard >= num_shards:
            break
        if shard in done:
            continue
        if limit is not None and taken >= limit:
            yield shard, items, False
            return
        items.append(example)
        taken += 1
    if seen != total:
        raise ValueError(
            f"The source yielded {seen} videos but {total} were counted when this output was started"
        )
    if shard < num_shards and shard not in done:
        yield shard, items, True


def prepare_shards(
    settings: PrepareSettings,
    out_dir: str | os.PathLike,
    *,
    shard_size: int = 500,
    num_shards: int | None = None,
    shard_multiple: int = 16,
    num_workers: int = 0,
    max_items: int | None = None,
    progress: bool = True,
) -> dict:
    """Write (or resume writing) the shards of one split. Returns the split's state record.

    See the module docstring for the layout. ``max_items`` stops after that many new videos (a partial shard
    stays behind and is rewritten by the next run); it exists for tests and dry runs.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = replace(settings, source=canonical_source(settings.source))
    source = load_video_source(
        settings.source,
        settings.split,
        video_column=settings.video_column,
        label_column=settings.label_column,
    )
    label_names = source_label_names(source)

    state_path = out_dir / STATE_FILE
    all_state = _read_json(state_path, {})
    record = all_state.get(settings.split)
    if record is not None:  # a state written before sources were made absolute, resumed from the same folder
        record["settings"]["source"] = canonical_source(record["settings"]["source"])
    if record is not None and record["settings"] != asdict(settings):
        raise UsageError(
            f"'{out_dir}' already holds split '{settings.split}' prepared with different settings "
            f"({record['settings']}); use a new output folder or the same options"
        )
    keys = _source_keys(source)
    if record is None:
        if not keys:
            raise UsageError(f"Source '{settings.source}' (split '{settings.split}') has no videos")
        count = num_shards or choose_num_shards(len(keys), shard_size, shard_multiple)
        record = {
            "settings": asdict(settings),
            "total": len(keys),
            "num_shards": min(count, len(keys)),
            "label_names": label_names,
            "plan_file": plan_file_name(settings.split),  # written once: the state is rewritten per shard
            "completed": {},
        }
        # the inputs in the order the shards hold them: a resume continues exactly this
        _write_json_atomic(out_dir / record["plan_file"], keys)
    elif num_shards and num_shards != record["num_shards"]:
        raise UsageError(
            f"Resuming with --num_shards {num_shards} but the first run used {record['num_shards']}"
        )
    boundaries = shard_boundaries(record["total"], record["num_shards"])
    done = {int(j) for j in record["completed"]}
    plan = _read_json(out_dir / record["plan_file"], None) if "plan_file" in record else None
    if plan is not None and len(plan) != record["total"]:
        raise ValueError(
            f"'{out_dir / record['plan_file']}' does not hold the {record['total']} planned videos"
        )
    follow_plan = plan is not None and keys != plan and len(done) < record["num_shards"]
    if follow_plan:
        _check_changed_source(settings, out_dir, plan, keys, record, label_names)
    elif plan is not None and keys != plan:
        print(f"'{out_dir}' is complete; the source changed since and is not read again", file=sys.stderr)

    def save() -> None:
        all_state[settings.split] = record
        _write_json_atomic(state_path, all_state)

    def finish(result: ShardResult) -> None:
        if result.complete:
            record["completed"][str(result.index)] = {"count": result.count, "skipped": result.skipped}
            save()
        for item in result.skipped:
            print(f"skipped {item['source']}: {item['reason']} ({item['detail']})", file=sys.stderr)

    save()
    done_items = sum(boundaries[j + 1] - boundaries[j] for j in done)
    bar = tqdm(
        total=record["total"], initial=done_items, unit="video", disable=not progress, desc=settings.split
    )
    if len(done) == record["num_shards"]:
        groups = iter(())  # nothing left to write: a changed source is no reason to read it again
    elif follow_plan:
        groups = _grouped_by_plan(source, plan, boundaries, done, max_items)
    else:
        groups = _grouped(source, boundaries, done, max_items)
    if num_workers > 0:
        _run_parallel(groups, out_dir, settings, label_names, num_workers, finish, bar)
    else:
        for index, items, complete in groups:
            finish(write_shard(str(out_dir), index, items, settings, label_names, complete))
            bar.update(len(items))
    bar.close()

    finished = len(record["completed"]) == record["num_shards"]
    skipped = [item for entry in record["completed"].values() for item in entry["skipped"]]
    all_skipped = _read_json(out_dir / SKIPPED_FILE, {})
    all_skipped[settings.split] = skipped
    _write_json_atomic(out_dir / SKIPPED_FILE, all_skipped)
    if finished and not any(entry["count"] for entry in record["completed"].values()):
        _refuse_all_bad(settings, out_dir, record, skipped, all_state, state_path)
    if finished:
        write_dataset_card(out_dir, label_names, all_state.keys())
        if skipped:
            print(
                f"{len(skipped)} videos skipped; listed in {out_dir / SKIPPED_FILE}",
                file=sys.stderr,
            )
    record["finished"] = finished
    return record


def _check_changed_source(
    settings: PrepareSettings,
    out_dir: Path,
    plan: list[str],
    keys: list[str],
    record: dict,
    label_names: list[str] | None,
) -> None:
    """A source that changed since this output was started: continue the recorded plan when every planned
    video is still there (and name the new ones, which are not included), refuse before writing otherwise."""
    where = f"'{settings.source}' (split '{settings.split}')"
    fresh = "Prepare into a new output folder to include the source as it is now"
    restore = f"{fresh}, or restore the source to resume '{out_dir}'."
    if len(set(plan)) != len(plan) or len(set(keys)) != len(keys):
        raise UsageError(
            f"{where} changed since '{out_dir}' was started and its videos have no unique keys to find them "
            f"by; nothing was written. {restore}"
        )
    if label_names != record["label_names"]:
        raise UsageError(
            f"The classes of {where} changed since '{out_dir}' was started ({record['label_names']} -> "
            f"{label_names}); nothing was written. {restore}"
        )
    present = set(keys)
    missing = [key for key in plan if key not in present]
    if missing:
        raise UsageError(
            f"{len(missing)} videos planned for '{out_dir}' are gone from {where} (e.g. {missing[:3]}); "
            f"nothing was written. {restore}"
        )
    planned = set(plan)
    new = [key for key in keys if key not in planned]
    record["not_included"] = len(new)
    print(
        f"{where} changed since '{out_dir}' was started: continuing its recorded plan of {len(plan)} videos; "
        f"{len(new)} new videos are not included (e.g. {new[:3]}). {fresh}.",
        file=sys.stderr,
    )


def _refuse_all_bad(
    settings, out_dir: Path, record: dict, skipped: list[dict], all_state: dict, state_path
) -> None:
    """No video of the source could be read: take back the empty shards, forget the split, and say why."""
    for j in range(record["num_shards"]):
        (out_dir / shard_name(settings.split, j)).unlink(missing_ok=True)
    del all_state[settings.split]
    _write_json_atomic(state_path, all_state)
    (out_dir / plan_file_name(settings.split)).unlink(missing_ok=True)
    reasons = Counter(item["reason"] for item in skipped)
    summary = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
    raise UsageError(
        f"None of the {record['total']} videos of '{settings.source}' (split '{settings.split}') could be "
        f"read ({summary}); no shards were written. Each file and its reason: {out_dir / SKIPPED_FILE}"
    )


def _run_parallel(groups, out_dir, settings, label_names, num_workers, finish, bar) -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no fork after datasets/pyarrow started threads
    with ProcessPoolExecutor(max_workers=num_workers, mp_context=context) as pool:
        pending: dict[Future, int] = {}
        for index, items, complete in groups:
            future = pool.submit(write_shard, str(out_dir), index, items, settings, label_names, complete)
            pending[future] = len(items)
            while len(pending) >= 2 * num_workers:  # bound the examples held in memory
                _drain(pending, finish, bar, FIRST_COMPLETED)
        while pending:
            _drain(pending, finish, bar, FIRST_COMPLETED)


def _drain(pending: dict, finish, bar, return_when) -> None:
    finished, _ = wait(list(pending), return_when=return_when)
    for future in finished:
        bar.update(pending.pop(future))
        finish(future.result())


def build_arg_parser() -> argparse.ArgumentParser:
    # snake_case options as the training scripts'; the former dashed spellings (`--short-side`) still work
    parser = CommandLineParser(
        description="Write a video source as WebDataset shards (optionally re-encoded for fast decoding).",
    )
    parser.add_argument(
        "src", help="folder of videos, .tar/.parquet files or glob, dataset folder, or Hub id"
    )
    parser.add_argument("out", help="output folder for the shards")
    parser.add_argument("--split", default="train", help="split to read from SRC and to name the shards")
    parser.add_argument(
        "--short_side", "--short-side", type=int, default=None, help="re-encode with this short side (pixels)"
    )
    parser.add_argument("--gop", type=int, default=None, help="re-encode with a keyframe every N frames")
    parser.add_argument(
        "--codec", choices=["libx264", "mpeg4"], default=None, help="re-encode with this codec"
    )
    parser.add_argument(
        "--crf", type=int, default=23, help="libx264 quality when re-encoding (lower = better)"
    )
    parser.add_argument(
        "--fast_decode", "--fast-decode", action="store_true", help="libx264 tune=fastdecode (bigger, faster)"
    )
    parser.add_argument("--shard_size", "--shard-size", type=int, default=500, help="target videos per shard")
    parser.add_argument(
        "--num_shards",
        "--num-shards",
        type=int,
        default=None,
        help="exact number of shards; pick a multiple of world_size x dataloader workers so every process "
        "reads whole shards (default: ceil(videos / shard_size) rounded up to --shard_multiple)",
    )
    parser.add_argument(
        "--shard_multiple",
        "--shard-multiple",
        type=int,
        default=16,
        help="round the automatic shard count up to this",
    )
    parser.add_argument(
        "--num_workers", "--num-workers", type=int, default=0, help="processes that encode shards in parallel"
    )
    parser.add_argument(
        "--video_column", "--video-column", default=None, help="the video column of a table source"
    )
    parser.add_argument(
        "--label_column", "--label-column", default=None, help="the label column of a table source"
    )
    parser.add_argument(
        "--max_items", "--max-items", type=int, default=None, help="stop after N videos (resume later)"
    )
    parser.add_argument("--no_progress", "--no-progress", action="store_true", help="hide the progress bar")
    return parser


@command_line
def main(argv: list[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    settings = PrepareSettings(
        source=str(args.src),
        split=args.split,
        short_side=args.short_side,
        gop=args.gop,
        codec=args.codec,
        crf=args.crf,
        fast_decode=args.fast_decode,
        video_column=args.video_column,
        label_column=args.label_column,
    )
    start = time.perf_counter()
    record = prepare_shards(
        settings,
        args.out,
        shard_size=args.shard_size,
        num_shards=args.num_shards,
        shard_multiple=args.shard_multiple,
        num_workers=args.num_workers,
        max_items=args.max_items,
        progress=not args.no_progress,
    )
    written = sum(entry["count"] for entry in record["completed"].values())
    status = "done" if record["finished"] else "incomplete (rerun the same command to continue)"
    print(
        f"{args.split}: {len(record['completed'])}/{record['num_shards']} shards, {written} videos in {args.out} "
        f"[{status}, {time.perf_counter() - start:.1f}s]",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
