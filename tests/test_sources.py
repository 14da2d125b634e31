"""Streaming video sources (hf_vssl.data.sources): every layout yields the same normalised samples."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import ClassLabel, Features, IterableDataset, Value, Video

from hf_vssl.data.prepare import TarShardWriter
from hf_vssl.data.sources import (
    align_labels,
    load_video_source,
    source_label_names,
    split_source_for_process,
    video_key_from_path,
)
from hf_vssl.video_decoding import read_frames

from .video_factory import index_frames, read_index, write_video

CLASSES = ("jump", "run", "walk")
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    """``root/{class}/{name}.mp4``, 3 classes x 3 videos, one name with dots; frame i shows 100*video + i."""
    root = tmp_path_factory.mktemp("folder")
    number = 0
    for label in CLASSES:
        for name in ("a", "b.take.2", "c"):
            frames = index_frames(np.arange(6) + 100 * number, (32, 32))
            write_video(root / label / f"{name}.mp4", frames, codec="mpeg4")
            number += 1
    (root / "notes.txt").write_text("not a video")
    (root / ".hidden").mkdir()
    write_video(root / ".hidden" / "x.mp4", index_frames(2, (32, 32)), codec="mpeg4")
    return root


def expected_samples(root: Path) -> dict[str, tuple[int, bytes]]:
    out = {}
    for label, name in enumerate(CLASSES):
        for path in sorted((root / name).glob("*.mp4")):
            out[video_key_from_path(path, root)] = (label, path.read_bytes())
    return out


def video_bytes(video: dict) -> bytes:
    return video["bytes"] if video["bytes"] is not None else Path(video["path"]).read_bytes()


def collect(dataset) -> dict[str, tuple[int, bytes]]:
    samples = {}
    for example in dataset:
        assert set(example) == {"video", "label", "key"}
        assert example["key"] not in samples, f"duplicate {example['key']}"
        samples[example["key"]] = (example["label"], video_bytes(example["video"]))
    return samples


@pytest.fixture(scope="module")
def wds_folder(video_folder, tmp_path_factory):
    """The same videos as WebDataset shards (2 tars), no dataset card."""
    out = tmp_path_factory.mktemp("wds")
    items = sorted(expected_samples(video_folder).items())
    for shard, part in enumerate((items[:5], items[5:])):
        with TarShardWriter(out / f"train-{shard:05d}.tar") as writer:
            for key, (label, data) in part:
                writer.write(key, data, label, {"label_name": CLASSES[label]})
    return out


@pytest.fixture(scope="module")
def parquet_folder(video_folder, tmp_path_factory):
    """The same videos as two Parquet files with a ``video`` struct (bytes, path) and a ``label`` column."""
    out = tmp_path_factory.mktemp("parquet")
    items = sorted(expected_samples(video_folder).items())
    for part, chunk in enumerate((items[:4], items[4:])):
        table = pa.table(
            {
                "video": [{"bytes": data, "path": f"{key}.mp4"} for key, (_, data) in chunk],
                "label": [label for _, (label, _) in chunk],
            }
        )
        pq.write_table(table, out / f"train-{part}.parquet")
    return out


# ----------------------------------------------------------------------------------------------------------
# folder source
# ----------------------------------------------------------------------------------------------------------
def test_folder_source_schema_labels_and_keys(video_folder):
    dataset = load_video_source(video_folder, num_shards=4)
    assert dataset.num_shards == 4
    assert isinstance(dataset.features["video"], Video) and not dataset.features["video"].decode
    assert isinstance(dataset.features["label"], ClassLabel)
    assert source_label_names(dataset) == list(CLASSES)
    samples = collect(dataset)
    assert samples == expected_samples(video_folder)
    assert "run/b_take_2" in samples  # dots replaced: WebDataset splits member names at the first dot
    first = next(iter(dataset))
    assert first["video"]["bytes"] is None and os.path.isabs(first["video"]["path"])
    # frame content comes from the right file
    label, data = samples["walk/c"]
    assert read_index(read_frames(data, [0, 5])).tolist() == [800, 805]


def test_folder_source_order_is_stable_and_mixes_classes(video_folder):
    keys = [ex["key"] for ex in load_video_source(video_folder)]
    assert keys == [ex["key"] for ex in load_video_source(video_folder)]
    assert keys != sorted(keys)  # classes interleaved so sequential shard writers mix them
    assert load_video_source(video_folder).num_shards == 9  # default: one shard per video (up to 1024)


def test_folder_split_subfolders_and_unlabelled(tmp_path):
    for split, count in (("train", 2), ("val", 1)):
        for i in range(count):
            write_video(
                tmp_path / "data" / split / "cat" / f"{i}.mp4", index_frames(2, (16, 16)), codec="mpeg4"
            )
    validation = load_video_source(tmp_path / "data", split="validation")
    assert [ex["key"] for ex in validation] == ["cat/0"]
    assert len(list(load_video_source(tmp_path / "data", split="train"))) == 2
    with pytest.raises(ValueError, match="Split 'test' not found"):
        load_video_source(tmp_path / "data", split="test")

    write_video(tmp_path / "flat" / "clip.mp4", index_frames(2, (16, 16)), codec="mpeg4")
    flat = load_video_source(tmp_path / "flat")
    assert source_label_names(flat) is None
    assert [(ex["key"], ex["label"]) for ex in flat] == [("clip", -1)]


# ----------------------------------------------------------------------------------------------------------
# every layout gives the same samples
# ----------------------------------------------------------------------------------------------------------
def test_webdataset_parquet_and_folder_agree(video_folder, wds_folder, parquet_folder):
    expected = expected_samples(video_folder)
    sources = {
        "folder": load_video_source(video_folder),
        "wds_dir": load_video_source(wds_folder),
        "wds_glob": load_video_source(str(wds_folder / "*.tar")),
        "wds_file": load_video_source(str(wds_folder / "train-00001.tar")),
        "parquet_dir": load_video_source(parquet_folder),
        "parquet_glob": load_video_source(str(parquet_folder / "*.parquet")),
    }
    assert sources["wds_dir"].num_shards == 2 and sources["parquet_dir"].num_shards == 2
    assert source_label_names(sources["wds_dir"]) is None  # no dataset card: integer labels
    for name, dataset in sources.items():
        samples = collect(dataset)
        if name == "wds_file":
            assert samples.items() <= expected.items() and len(samples) == 4
        else:
            assert samples == expected, name
        for key, (_, data) in list(samples.items())[:2]:
            np.testing.assert_array_equal(read_frames(data, [1, 4]), read_frames(expected[key][1], [1, 4]))


def test_dataset_card_folder_takes_the_hub_code_path(video_folder, tmp_path):
    """A folder with a dataset card is read by ``load_dataset(folder)`` exactly as a Hub id would be; the card's
    ClassLabel names survive (plain tar folders have integer labels only)."""
    from hf_vssl.data.prepare import main as prepare_main

    out = tmp_path / "prepared"
    assert prepare_main([str(video_folder), str(out), "--num-shards", "3", "--no-progress"]) == 0
    dataset = load_video_source(out)
    assert source_label_names(dataset) == list(CLASSES)
    assert isinstance(dataset.features["label"], ClassLabel)
    assert dataset.num_shards == 3
    assert collect(dataset) == expected_samples(video_folder)


def test_parquet_column_detection_and_derived_keys(tmp_path):
    data = [
        write_video(tmp_path / "v" / f"{i}.mp4", index_frames(3, (16, 16)), codec="mpeg4").read_bytes()
        for i in range(3)
    ]
    pq.write_table(
        pa.table({"mp4": data, "cls": [2, 0, 1], "caption": ["x", "y", "z"]}), tmp_path / "binary.parquet"
    )
    dataset = load_video_source(str(tmp_path / "binary.parquet"))
    rows = list(dataset)
    assert [r["label"] for r in rows] == [2, 0, 1]
    assert all(
        len(r["key"]) == 20 and "." not in r["key"] for r in rows
    )  # content hash when nothing names it
    assert rows[0]["video"]["bytes"] == data[0]

    pq.write_table(
        pa.table({"clip": [{"bytes": data[0], "path": "/abs/dir/class_x/v.0.mp4"}], "video_id": ["yt.123"]}),
        tmp_path / "named.parquet",
    )
    row = next(iter(load_video_source(str(tmp_path / "named.parquet"))))
    assert (row["key"], row["label"]) == ("yt_123", -1)

    pq.write_table(pa.table({"caption": ["x"], "n": [1]}), tmp_path / "novideo.parquet")
    with pytest.raises(ValueError, match="Cannot find a video column"):
        load_video_source(str(tmp_path / "novideo.parquet"))
    pq.write_table(
        pa.table({"video": [{"bytes": data[0], "path": "a.mp4"}], "label": ["cat"]}), tmp_path / "s.parquet"
    )
    with pytest.raises(ValueError, match="ClassLabel"):
        load_video_source(str(tmp_path / "s.parquet"), label_column="label")


def test_a_label_column_of_class_names_is_not_silently_dropped(tmp_path, caplog):
    data = write_video(tmp_path / "v.mp4", index_frames(3, (16, 16)), codec="mpeg4").read_bytes()
    pq.write_table(
        pa.table({"video": [{"bytes": data, "path": "a.mp4"}], "label": ["cat"]}), tmp_path / "s.parquet"
    )
    with caplog.at_level("WARNING", logger="hf_vssl.data.sources"):
        row = next(iter(load_video_source(str(tmp_path / "s.parquet"))))
    assert row["label"] == -1
    assert "'label' looks like labels" in caplog.text and "unlabelled" in caplog.text


def test_missing_inputs_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such file"):
        load_video_source(tmp_path / "does_not_exist")
    with pytest.raises(FileNotFoundError, match="No files match"):
        load_video_source(str(tmp_path / "*.tar"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no video files"):
        load_video_source(tmp_path / "empty")


def test_video_key_from_path():
    assert video_key_from_path("/data/k400/train/dance/a.b.mp4", "/data/k400/train") == "dance/a_b"
    assert video_key_from_path("hf://datasets/org/x@main/train/dance/clip.mp4") == "dance/clip"
    assert video_key_from_path("dance/clip.01.avi") == "dance/clip_01"


# ----------------------------------------------------------------------------------------------------------
# per-process split, with real processes
# ----------------------------------------------------------------------------------------------------------
SPLIT_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from hf_vssl.data.sources import load_video_source, split_source_for_process
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    keys = {}
    for spec, num_shards in json.loads(sys.argv[1]):
        dataset = load_video_source(spec, num_shards=num_shards)
        part = split_source_for_process(dataset, rank, world_size)
        keys[f"{spec}|{num_shards}"] = [example["key"] for example in part]
    print(json.dumps(keys))
    """
)


def run_ranks(jobs: list[tuple[str, int | None]], world_size: int = 2) -> list[dict[str, list[str]]]:
    """Run the split in ``world_size`` real processes (RANK / WORLD_SIZE as launchers set them)."""
    processes = []
    for rank in range(world_size):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world_size), OMP_NUM_THREADS="1")
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", SPLIT_SCRIPT, json.dumps(jobs)],
                env=env,
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    return outputs


def test_two_processes_see_every_sample_exactly_once(video_folder, wds_folder):
    """Whole shards (4 % 2 == 0, and 2 tars), every other example (3 shards): never a duplicate or a gap."""
    jobs = [(str(video_folder), 4), (str(video_folder), 3), (str(wds_folder), None)]
    ranks = run_ranks(jobs)
    every = sorted(expected_samples(video_folder))
    for spec, num_shards in jobs:
        parts = [rank[f"{spec}|{num_shards}"] for rank in ranks]
        assert all(parts), f"a process got nothing for {spec} / {num_shards} shards"
        assert sorted(parts[0] + parts[1]) == every, (spec, num_shards)
        assert not set(parts[0]) & set(parts[1])
    wds_parts = [rank[f"{wds_folder}|None"] for rank in ranks]
    assert sorted(map(len, wds_parts)) == [4, 5]  # one tar per process


def test_split_validates_rank(video_folder):
    dataset = load_video_source(video_folder)
    assert split_source_for_process(dataset, 0, 1) is dataset
    with pytest.raises(ValueError, match="rank"):
        split_source_for_process(dataset, 2, 2)


def test_align_labels_renumbers_classes_by_name():
    """A validation source numbers its own classes (here it lacks 'banana'): ids must follow the training names."""
    features = Features({"key": Value("string"), "label": ClassLabel(names=["apple", "cherry"])})
    rows = [{"key": "a", "label": 0}, {"key": "c", "label": 1}]
    validation = IterableDataset.from_generator(lambda: iter(rows), features=features)
    aligned = align_labels(validation, ["apple", "banana", "cherry"])
    assert source_label_names(aligned) == ["apple", "banana", "cherry"]
    assert [(row["key"], row["label"]) for row in aligned] == [("a", 0), ("c", 2)]
    assert align_labels(validation, ["apple", "cherry"]) is validation  # nothing to do
    with pytest.raises(ValueError, match="cherry"):
        align_labels(validation, ["apple", "banana"])


def test_a_folder_source_knows_its_size_before_it_is_read(tmp_path):
    from hf_vssl.data.sources import source_num_videos
    from hf_vssl.data.synthetic import write_synthetic_videos

    paths = write_synthetic_videos(tmp_path / "train", num_per_class=2, num_frames=4, size=(16, 16))
    assert source_num_videos(load_video_source(tmp_path / "train")) == len(paths)
    # a generator without split sizes is counted by reading it
    stream = IterableDataset.from_generator(lambda: iter([{"key": "a"}]))
    assert source_num_videos(stream) is None
