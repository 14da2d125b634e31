"""Synthetic motion videos (hf_vssl.data.synthetic) and shard preparation (hf_vssl.data.prepare)."""

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from hf_vssl.data.prepare import choose_num_shards, main, shard_boundaries
from hf_vssl.data.sources import load_video_source, source_label_names
from hf_vssl.data.synthetic import (
    MOTION_CLASSES,
    object_track,
    render_motion_video,
    synthetic_video_frames,
    write_synthetic_shards,
    write_synthetic_videos,
)
from hf_vssl.video_decoding import VideoReader, read_frames

from .video_factory import index_frames, write_bad_files, write_video

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(num_frames=24, size=(48, 48))


# ----------------------------------------------------------------------------------------------------------
# synthetic videos
# ----------------------------------------------------------------------------------------------------------
def _decode_all(data: bytes) -> np.ndarray:
    with VideoReader(data) as reader:
        return reader.get_frames(np.arange(reader.info.num_frames))


def assert_same_shard(path_a: Path, path_b: Path) -> None:
    """Two shards hold the same samples: same members in the same order, identical labels and metadata, and
    videos that decode to the same frames. Encoded bytes may differ: x264's output is not guaranteed to be
    byte-identical between runs (seen under load), and no user depends on it."""
    with tarfile.open(path_a) as tar_a, tarfile.open(path_b) as tar_b:
        members_a, members_b = tar_a.getmembers(), tar_b.getmembers()
        assert [m.name for m in members_a] == [m.name for m in members_b], path_a.name
        for member_a, member_b in zip(members_a, members_b):
            data_a, data_b = tar_a.extractfile(member_a).read(), tar_b.extractfile(member_b).read()
            if not member_a.name.endswith(".mp4"):
                assert data_a == data_b, member_a.name
                continue
            frames_a, frames_b = (_decode_all(data_a), _decode_all(data_b))
            assert frames_a.shape == frames_b.shape, member_a.name
            # the same encode up to rounding: x264 decisions may differ, the pictures do not
            assert np.abs(frames_a.astype(np.int16) - frames_b.astype(np.int16)).mean() < 1.0, member_a.name


def test_rendering_is_deterministic_and_seeded():
    a = synthetic_video_frames(2, 5, seed=0, **SMALL)
    assert a.shape == (24, 48, 48, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, synthetic_video_frames(2, 5, seed=0, **SMALL))
    assert not np.array_equal(a, synthetic_video_frames(2, 5, seed=1, **SMALL))
    assert not np.array_equal(a, synthetic_video_frames(2, 6, seed=0, **SMALL))
    with pytest.raises(ValueError, match="Unknown motion class"):
        render_motion_video("wobble")


def test_object_tracks_follow_the_class():
    rng = np.random.default_rng(0)
    for _ in range(5):
        x, y, angle, scale = object_track("left", rng, 20, 64, 64)
        assert np.all(np.diff(x) < -1.4) and np.abs(np.diff(y)).max() < 0.25
        x, y, angle, scale = object_track("down", rng, 20, 64, 64)
        assert np.all(np.diff(y) > 1.4) and np.abs(np.diff(x)).max() < 0.25
        # image y points down: an increasing angle turns clockwise on screen
        assert np.all(np.diff(object_track("rotate_cw", rng, 20, 64, 64)[2]) > 0)
        assert np.all(np.diff(object_track("rotate_ccw", rng, 20, 64, 64)[2]) < 0)
        assert np.all(np.diff(object_track("grow", rng, 20, 64, 64)[3]) > 0)
        assert np.all(np.diff(object_track("shrink", rng, 20, 64, 64)[3]) < 0)


def foreground(frames: np.ndarray) -> np.ndarray:
    """Moving objects of a static-background video: pixels far from the temporal median."""
    frames = frames.astype(np.float32)
    return np.abs(frames - np.median(frames, axis=0)).sum(axis=-1) > 60


def dominant_shift(mask_a: np.ndarray, mask_b: np.ndarray, reach: int = 5) -> tuple[int, int]:
    """(dy, dx) that best maps ``mask_a`` onto ``mask_b`` on the torus."""
    errors = {
        (dy, dx): np.abs(np.roll(mask_a, (dy, dx), axis=(0, 1)).astype(int) - mask_b).sum()
        for dy in range(-reach, reach + 1)
        for dx in range(-reach, reach + 1)
    }
    return min(errors, key=errors.get)


def test_decoded_synthetic_videos_show_their_motion(tmp_path):
    paths = write_synthetic_videos(tmp_path, num_per_class=2, codec="mpeg4", **SMALL)
    assert len(paths) == 2 * len(MOTION_CLASSES)
    expected_direction = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
    for path in paths:
        motion = path.parent.name
        frames = read_frames(path, range(24))
        mask = foreground(frames)
        if motion in expected_direction:
            dy, dx = dominant_shift(mask[6], mask[8])  # two frames apart: 3-6 px
            assert (np.sign(dy), np.sign(dx)) == expected_direction[motion], path
        elif motion in ("grow", "shrink"):
            early, late = mask[:4].sum(), mask[-4:].sum()
            assert (late > 1.5 * early) if motion == "grow" else (early > 1.5 * late), path


def test_write_synthetic_videos_layout_and_reuse(tmp_path):
    classes = ("left", "grow")
    paths = write_synthetic_videos(tmp_path, num_per_class=3, classes=classes, seed=4, **SMALL)
    assert [p.relative_to(tmp_path).as_posix() for p in paths[:2]] == [
        "left/left_0000.mp4",
        "left/left_0001.mp4",
    ]
    with VideoReader(paths[-1]) as reader:
        assert (reader.info.num_frames, reader.info.height, reader.info.width) == (24, 48, 48)
        assert reader.keyframe_indices == [0, 16]
    dataset = load_video_source(tmp_path)
    assert source_label_names(dataset) == sorted(classes)
    assert sorted((ex["key"], ex["label"]) for ex in dataset)[:2] == [
        ("grow/grow_0000", 0),
        ("grow/grow_0001", 0),
    ]

    stamps = {p: p.stat().st_mtime_ns for p in paths}
    assert write_synthetic_videos(tmp_path, num_per_class=3, classes=classes, seed=4, **SMALL) == paths
    assert {p: p.stat().st_mtime_ns for p in paths} == stamps  # matched the manifest: nothing rewritten

    fewer = write_synthetic_videos(tmp_path, num_per_class=2, classes=classes, seed=4, **SMALL)
    assert len(fewer) == 4 and not (tmp_path / "left" / "left_0002.mp4").exists()  # stale file removed
    paths[0].write_bytes(b"damaged")
    write_synthetic_videos(tmp_path, num_per_class=2, classes=classes, seed=4, **SMALL)
    assert VideoReader(paths[0]).info.num_frames == 24  # size mismatch with the manifest: regenerated

    with pytest.raises(ValueError, match="even"):
        write_synthetic_videos(tmp_path / "odd", size=(47, 48))


def test_synthetic_shards_match_the_folder_version(tmp_path):
    classes = ("up", "rotate_cw", "shrink")
    folder = write_synthetic_videos(tmp_path / "folder", num_per_class=2, classes=classes, **SMALL)
    shards = write_synthetic_shards(
        tmp_path / "shards", num_per_class=2, classes=classes, num_shards=4, **SMALL
    )
    assert [s.name for s in shards] == [f"train-{j:05d}.tar" for j in range(4)]
    from_folder = {ex["key"]: ex for ex in load_video_source(tmp_path / "folder")}
    from_shards = {ex["key"]: ex for ex in load_video_source(tmp_path / "shards")}
    assert source_label_names(load_video_source(tmp_path / "shards")) == list(classes)  # card: class order
    assert sorted(from_folder) == sorted(from_shards) == sorted(f"{p.parent.name}/{p.stem}" for p in folder)
    for key, example in from_shards.items():
        assert classes[example["label"]] == key.split("/")[0]
        # two encodes of the same frames: equal up to x264's occasional +-1 (see assert_same_shard)
        shard_frames = read_frames(example["video"], [0, 23]).astype(np.int16)
        folder_frames = read_frames(from_folder[key]["video"], [0, 23]).astype(np.int16)
        assert np.abs(shard_frames - folder_frames).mean() < 1.0, key
    stamps = [s.stat().st_mtime_ns for s in shards]
    write_synthetic_shards(tmp_path / "shards", num_per_class=2, classes=classes, num_shards=4, **SMALL)
    assert [s.stat().st_mtime_ns for s in shards] == stamps


# ----------------------------------------------------------------------------------------------------------
# prepare
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture()
def source_folder(tmp_path):
    """2 classes x 4 index videos (30 frames, 40x64, GOP 30) plus 4 broken files inside the class folders."""
    root = tmp_path / "src"
    for c, label in enumerate(("cat", "dog")):
        for i in range(4):
            frames = index_frames(np.arange(30) + 100 * (4 * c + i), (40, 64))
            write_video(root / label / f"clip{i}.mp4", frames, codec="libx264", gop=30)
    bad = write_bad_files(tmp_path / "bad")
    for kind in ("empty", "text", "audio_only", "truncated"):
        (root / "dog" / f"{kind}.mp4").write_bytes(bad[kind].read_bytes())
    return root


def shard_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_prepare_cli_reencodes_and_skips_bad_inputs(source_folder, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "hf_vssl.data.prepare", str(source_folder), str(out)]
    command += ["--short-side", "24", "--gop", "4", "--shard-size", "3", "--shard-multiple", "1"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for kind in ("empty", "text", "audio_only", "truncated"):
        assert f"dog/{kind}.mp4" in result.stderr  # each unreadable input named on stderr
    skipped = json.loads((out / "skipped.json").read_text())["train"]
    assert sorted(Path(item["source"]).name for item in skipped) == [
        "audio_only.mp4",
        "empty.mp4",
        "text.mp4",
        "truncated.mp4",
    ]
    assert {item["reason"] for item in skipped} == {
        "empty file",
        "cannot open",
        "no video stream",
        "truncated",
    }

    assert sorted(p.name for p in out.glob("*.tar")) == [f"train-{j:05d}.tar" for j in range(4)]  # 12 in / 3
    dataset = load_video_source(out)
    assert source_label_names(dataset) == ["cat", "dog"]
    examples = list(dataset)
    assert sorted(ex["key"] for ex in examples) == [f"{c}/clip{i}" for c in ("cat", "dog") for i in range(4)]
    for example in examples:
        with VideoReader(example["video"], name=example["key"]) as reader:
            assert (reader.info.height, reader.info.width) == (24, 38)  # short side 24, aspect kept, even
            assert reader.keyframe_indices == list(range(0, 30, 4))
            first = 100 * (4 * ("cat", "dog").index(example["key"][:3]) + int(example["key"][-1]))
            # the index blocks survive re-encoding at 24 px (cells are 6 px tall)
            from .video_factory import read_index

            assert read_index(reader.get_frames([0, 29])).tolist() == [first, first + 29]
    meta = json.loads(
        next(v for k, v in shard_members(out / "train-00000.tar").items() if k.endswith(".json"))
    )
    assert meta["reencoded"] and meta["label_name"] in ("cat", "dog") and meta["num_frames"] == 30


def test_prepare_copy_mode_keeps_bytes_and_exact_shard_count(source_folder, tmp_path):
    out = tmp_path / "copy"
    assert main([str(source_folder), str(out), "--num-shards", "4", "--no-progress"]) == 0
    tars = sorted(out.glob("*.tar"))
    assert len(tars) == 4
    counts = [sum(name.endswith(".cls") for name in shard_members(t)) for t in tars]
    assert sum(counts) == 8 and max(counts) - min(counts) <= 2  # 12 inputs in 3s, minus the 4 skipped
    members = {k: v for t in tars for k, v in shard_members(t).items()}
    assert members["cat/clip2.mp4"] == (source_folder / "cat" / "clip2.mp4").read_bytes()
    assert members["dog/clip0.cls"] == b"1"


def test_prepare_resumes_after_interruption(source_folder, tmp_path, capsys):
    args = ["--short-side", "24", "--gop", "8", "--shard-size", "4", "--shard-multiple", "1", "--no-progress"]
    interrupted, clean = tmp_path / "interrupted", tmp_path / "clean"
    assert main([str(source_folder), str(interrupted), *args, "--max-items", "6"]) == 0
    state = json.loads((interrupted / ".prepare-state.json").read_text())["train"]
    assert list(state["completed"]) == ["0"] and state["num_shards"] == 3
    assert (interrupted / "train-00001.tar.partial").exists() and not (
        interrupted / "train-00001.tar"
    ).exists()
    assert not (interrupted / "README.md").exists()  # no dataset card until every shard is done

    shard0 = (interrupted / "train-00000.tar").stat().st_mtime_ns
    assert main([str(source_folder), str(interrupted), *args]) == 0
    assert (interrupted / "train-00000.tar").stat().st_mtime_ns == shard0  # completed shard not redone
    assert not list(interrupted.glob("*.partial"))

    assert main([str(source_folder), str(clean), *args]) == 0
    for j in range(3):
        name = f"train-{j:05d}.tar"
        assert_same_shard(interrupted / name, clean / name)

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:  # the user's mistake: one error line, exit status 2
        main([str(source_folder), str(interrupted), "--short-side", "32", "--no-progress"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "error: " in error and "different settings" in error


def test_prepare_parallel_workers_write_the_same_shards(source_folder, tmp_path):
    args = ["--gop", "8", "--shard-size", "4", "--shard-multiple", "1", "--no-progress"]
    assert main([str(source_folder), str(tmp_path / "serial"), *args]) == 0
    assert main([str(source_folder), str(tmp_path / "parallel"), *args, "--num-workers", "2"]) == 0
    for shard in sorted((tmp_path / "serial").glob("*.tar")):
        assert_same_shard(shard, tmp_path / "parallel" / shard.name)


def test_prepare_stores_long_and_non_ascii_names_and_lists_unwritable_keys(tmp_path):
    """Names past the 100-byte USTAR limit or outside ASCII are ordinary file names; a key that WebDataset
    readers would drop (file name starting with "__") is skipped and listed, and the run goes on."""
    root, out = tmp_path / "src", tmp_path / "out"
    keys = ["cat/" + "a_long_clip_name_" * 8, "cat/ünïcödé_клип_视频", "dog/plain", "dog/__hidden"]
    for i, key in enumerate(keys):
        write_video(root / f"{key}.mp4", index_frames(np.arange(8) + 10 * i, (32, 32)), codec="mpeg4", gop=4)
    assert main([str(root), str(out), "--num-shards", "1", "--no-progress"]) == 0
    skipped = json.loads((out / "skipped.json").read_text())["train"]
    assert [(item["key"], item["reason"]) for item in skipped] == [("dog/__hidden", "write failed")]
    assert not any("__hidden" in name for name in shard_members(out / "train-00000.tar"))
    examples = {ex["key"]: ex for ex in load_video_source(out)}
    assert sorted(examples) == sorted(keys[:3])
    from .video_factory import read_index

    for i, key in enumerate(keys[:3]):
        assert read_index(read_frames(examples[key]["video"], [7])).tolist() == [10 * i + 7], key


def test_shard_count_rules():
    assert choose_num_shards(10_000, 500, 16) == 32
    assert choose_num_shards(100, 500, 16) == 16
    assert choose_num_shards(5, 500, 16) == 5  # never an empty shard
    assert shard_boundaries(9, 4) == [0, 2, 4, 6, 9]
