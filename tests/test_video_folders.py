"""Real-world video folders through folder sources and `prepare`: every kind of good file present exactly once,
every bad one named with its reason, symlinks, same-stem files, a source that changes between runs."""

import hashlib
import json
import os
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest

from hf_vssl.data.prepare import main
from hf_vssl.data.sources import load_video_source, video_key_from_path
from hf_vssl.video_decoding import VideoDecodeError, VideoReader, read_frames

from .video_corpus import write_corpus
from .video_factory import index_frames, read_index, write_bad_files, write_video


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    good, bad = write_corpus(root)
    return root, good, bad


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def test_corpus_is_byte_identical_from_run_to_run(corpus, tmp_path):
    root, good, bad = corpus
    write_corpus(tmp_path)
    assert _digests(tmp_path) == _digests(root)
    assert len(good) >= 25 and len(bad) >= 10


def _shard_samples(out: Path) -> list[tuple[dict, bytes]]:
    samples = []
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name, data in members.items():
            if name.endswith(".json"):
                meta = json.loads(data)
                samples.append((meta, members[name[: -len(".json")] + ".mp4"]))
    return samples


def test_corpus_walk_through_prepare(corpus, tmp_path, capsys):
    """Every good file (each codec and container, links, same stems, odd names) is in the shards exactly once,
    under a key of its own, with its own frames; every bad file is in skipped.json under its own path with the
    reason for it; the link loop is not followed."""
    root, good, bad = corpus
    out = tmp_path / "out"
    assert main([str(root / "videos"), str(out), "--num-shards", "2", "--no-progress"]) == 0
    samples = _shard_samples(out)
    by_source = {}
    for meta, data in samples:
        assert meta["source"] not in by_source, f"{meta['source']} written twice"
        by_source[meta["source"]] = (meta, data)
    assert sorted(by_source) == sorted(str(video.path) for video in good)
    assert len({meta["key"] for meta, _ in samples}) == len(samples)
    for video in good:
        meta, data = by_source[str(video.path)]
        with VideoReader(data, name=meta["key"]) as reader:
            assert reader.info.num_frames == video.num_frames, video.path
            frames = reader.get_frames([0, video.num_frames - 1])
        frames = np.rot90(frames, k=-video.rotation // 90, axes=(1, 2))
        expected = [video.first_index, video.first_index + video.num_frames - 1]
        assert read_index(frames).tolist() == expected, video.path

    skipped = json.loads((out / "skipped.json").read_text())["train"]
    assert {item["source"]: item["reason"] for item in skipped} == {str(v.path): v.reason for v in bad}
    err = capsys.readouterr().err
    for video in bad:
        assert str(video.path) in err
    assert (out / "README.md").exists()


def test_folder_source_follows_links_and_keys_by_path_under_the_root(corpus):
    root, _, _ = corpus
    videos = root / "videos"
    examples = {ex["key"]: ex["video"]["path"] for ex in load_video_source(videos)}
    assert examples["names/clip_mp4"] == str(videos / "names/clip.mp4")  # same stem: extensions kept
    assert examples["names/clip_mkv"] == str(videos / "names/clip.mkv")
    assert examples["links/outside"] == str(videos / "links/outside.mp4")  # the link, not its target
    assert examples["links/linked_folder/clip"] == str(videos / "links/linked_folder/clip.avi")
    assert examples["h264/bframes_mp4"] == str(videos / "h264/bframes.mp4")
    assert not any(key.startswith("links/loop") for key in examples)
    assert examples["bad/dangling"] == str(videos / "bad/dangling.mp4")
    with pytest.raises(VideoDecodeError) as info:
        read_frames(examples["bad/dangling"], [0])
    assert info.value.source.endswith("bad/dangling.mp4") and info.value.reason == "cannot open"
    assert video_key_from_path(videos / "links/outside.mp4", videos) == "links/outside"


# ----------------------------------------------------------------------------------------------------------
# a source that changes between runs
# ----------------------------------------------------------------------------------------------------------
def _small_folder(folder: Path, names: list[str]) -> Path:
    for i, name in enumerate(names):
        first = 100 * (i + 1)
        write_video(folder / name, index_frames(np.arange(first, first + 6), (32, 32)), codec="mpeg4", gop=3)
    return folder


NAMES = [f"{c}/v{i}.mp4" for c in ("cat", "dog") for i in range(4)]


def _written(out: Path) -> dict[str, int]:
    """{key: first frame index} of every sample in the shards."""
    return {meta["key"]: int(read_index(read_frames(data, [0]))[0]) for meta, data in _shard_samples(out)}


def test_resume_after_files_were_added_continues_the_plan(tmp_path, monkeypatch, capsys):
    src = _small_folder(tmp_path / "src", NAMES)
    out = tmp_path / "out"
    args = ["--num-shards", "4", "--no-progress"]
    assert main([str(src), str(out), *args, "--max-items", "3"]) == 0
    state = json.loads((out / ".prepare-state.json").read_text())["train"]
    assert len(json.loads((out / state["plan_file"]).read_text())) == 8 and len(state["completed"]) == 1
    clean = tmp_path / "clean"
    assert main([str(src), str(clean), *args]) == 0

    _small_folder(tmp_path / "more", ["cat/new0.mp4", "dog/new1.mp4"])
    for name in ("cat/new0.mp4", "dog/new1.mp4"):
        os.replace(tmp_path / "more" / name, src / name)
    monkeypatch.chdir(tmp_path)  # the source named relative to another folder is the same source
    capsys.readouterr()
    assert main(["src", str(out), *args]) == 0
    err = capsys.readouterr().err
    assert "2 new videos are not included" in err and "cat/new0" in err
    assert _written(out) == _written(clean)  # no duplicate, no loss, the same shards
    for j in range(4):
        name = f"train-{j:05d}.tar"
        with tarfile.open(out / name) as a, tarfile.open(clean / name) as b:
            assert a.getnames() == b.getnames(), name


def test_resume_after_a_planned_file_was_removed_refuses_before_writing(tmp_path, capsys):
    src = _small_folder(tmp_path / "src", NAMES)
    out = tmp_path / "out"
    args = ["--num-shards", "4", "--no-progress"]
    assert main([str(src), str(out), *args, "--max-items", "3"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (src / "dog/v3.mp4").unlink()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:  # one error line, exit status 2
        main([str(src), str(out), *args])
    assert exit_info.value.code == 2
    assert re.search(r"error: 1 videos planned .* are gone .*nothing was written", capsys.readouterr().err)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_all_bad_source_fails_and_writes_no_shards(tmp_path, capsys):
    src = tmp_path / "src"
    bad = write_bad_files(src / "cls")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:  # one error line, exit status 2
        main([str(src), str(out), "--no-progress"])
    assert exit_info.value.code == 2
    assert re.search(
        r"error: None of the 5 videos .* could be read .*no shards were written", capsys.readouterr().err
    )
    assert not list(out.glob("*.tar*")) and not (out / "README.md").exists()
    skipped = json.loads((out / "skipped.json").read_text())["train"]
    assert sorted(item["source"] for item in skipped) == sorted(str(p) for p in bad.values())
