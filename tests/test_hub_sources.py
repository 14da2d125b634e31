"""Hub dataset ids and ``hf://`` WebDataset shards as video sources, read by the real ``huggingface_hub`` and
``datasets`` clients from the loopback Hub (tests/fake_hub.py): sources, the remote reader
(hf_vssl.data.inputs.fetch_remote_video) and ``prepare`` from a Hub id."""

import json
import sys

import numpy as np

from hf_vssl.data.prepare import main

from .fake_hub import fake_hub_fixture, run_python  # noqa: F401
from .video_factory import index_frames, write_text_as_video, write_video

NAMES = ["cat/a.mp4", "cat/b.mp4", "dog/c.mp4", "dog/d.mp4"]
FIRST = {name[:-4]: 100 * (i + 1) for i, name in enumerate(NAMES)}  # key -> index drawn on its frame 0

CLIENT = """
import json, sys
from pathlib import Path
from hf_vssl.data.inputs import fetch_remote_video
from hf_vssl.data.prepare import main
from hf_vssl.data.sources import load_video_source, source_label_names
from hf_vssl.video_decoding import VideoDecodeError, read_frames
from tests.video_factory import read_index

out = {}
for spec in ("fake-user/shards", "hf://datasets/fake-user/shards/train-*.tar", "fake-user/videos"):
    dataset = load_video_source(spec)
    rows = []
    for example in dataset:
        try:
            video = fetch_remote_video(example["video"], example["key"])
            frames = read_index(read_frames(video, [0, 5])).tolist()
        except VideoDecodeError as err:
            frames = err.reason
        rows.append([example["key"], example["label"], example["video"]["path"], frames])
    out[spec] = {"labels": source_label_names(dataset), "rows": rows}
try:
    fetch_remote_video({"bytes": None, "path": "hf://datasets/fake-user/videos/cat/missing.mp4"}, "cat/missing")
except VideoDecodeError as err:
    out["missing"] = [err.source, err.reason]
main(["fake-user/videos", sys.argv[1], "--num-shards", "2", "--no-progress"])
print(json.dumps(out))
"""


def test_hub_dataset_ids_and_hf_shards_as_sources(fake_hub, tmp_path):
    src, shards = tmp_path / "src", tmp_path / "shards"
    for name in NAMES:
        first = FIRST[name[:-4]]
        write_video(src / name, index_frames(np.arange(first, first + 6), (32, 32)), codec="mpeg4", gop=3)
    assert main([str(src), str(shards), "--num-shards", "2", "--no-progress"]) == 0
    write_text_as_video(src / "dog" / "broken.mp4")  # only in the Hub repo of plain videos

    fake_hub.create_repo("fake-user/shards", repo_type="dataset")
    files = {p.name: p.read_bytes() for p in shards.iterdir() if p.is_file() and not p.name.startswith(".")}
    fake_hub.commit("fake-user/shards", files, repo_type="dataset")
    fake_hub.create_repo("fake-user/videos", repo_type="dataset")
    files = {p.relative_to(src).as_posix(): p.read_bytes() for p in src.rglob("*.mp4")}
    fake_hub.commit("fake-user/videos", files, repo_type="dataset")

    from_hub = tmp_path / "from_hub"
    proc = run_python(
        CLIENT.replace("sys.argv[1]", repr(str(from_hub))),
        env={**fake_hub.env(tmp_path / "hf_home"), "PYTHONPATH": str(sys.path[0])},
        cwd=str(tmp_path),
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    expected = {key: [FIRST[key], FIRST[key] + 5] for key in FIRST}
    for spec in ("fake-user/shards", "hf://datasets/fake-user/shards/train-*.tar"):
        rows = out[spec]["rows"]
        assert {key: frames for key, _, _, frames in rows} == expected, spec
        assert {key: label for key, label, _, _ in rows} == {k: int(k.startswith("dog")) for k in FIRST}, spec
    assert out["fake-user/shards"]["labels"] == ["cat", "dog"]  # the card's ClassLabel, read from the Hub

    # plain videos in a Hub repo arrive as hf:// paths: the remote reader fetches each one
    rows = out["fake-user/videos"]["rows"]
    assert out["fake-user/videos"]["labels"] == ["cat", "dog"]
    assert {key: frames for key, _, _, frames in rows} == {**expected, "dog/broken": "cannot open"}
    assert all(path.startswith("hf://datasets/fake-user/videos@") for _, _, path, _ in rows)
    assert out["missing"] == ["cat/missing", "cannot open"]

    # prepare from a Hub id: every readable video written once, the broken one skipped under its hf:// path
    skipped = json.loads((from_hub / "skipped.json").read_text())["train"]
    assert [(item["key"], item["reason"]) for item in skipped] == [("dog/broken", "cannot open")]
    assert skipped[0]["source"].startswith("hf://datasets/fake-user/videos@")
    assert (from_hub / "README.md").exists() and len(list(from_hub.glob("train-*.tar"))) == 2
    assert not fake_hub.unhandled, fake_hub.unhandled
