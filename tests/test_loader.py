"""Data loader over the view engine: bad-file policy, skip counting, determinism, epochs, worker rendering."""

import logging
import pickle

import numpy as np
import pytest
import torch

from hf_vssl.data.inputs import SkippedVideos
from hf_vssl.data.loader import VideoViewDataset, build_view_dataloader, stage2_placement
from hf_vssl.data.recipes import MLFOViews
from hf_vssl.data.rendering import apply_views
from hf_vssl.video_decoding import VideoDecodeError

from .video_factory import index_frames, write_bad_files, write_video

BAD_KINDS = ("empty", "text", "audio_only", "truncated", "truncated_no_index")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader")
    good = [write_video(root / f"good_{i}.mp4", index_frames(40 + 4 * i, (32, 32)), gop=8) for i in range(6)]
    bad = write_bad_files(root / "bad")
    bad["too_short"] = write_video(root / "bad" / "too_short.mp4", index_frames(20, (32, 32)))
    return {"good": good, "bad": [bad[kind] for kind in (*BAD_KINDS, "too_short")]}


def examples(paths, labels=None):
    return [
        {"video": str(p), "label": i if labels is None else labels[i], "key": p.stem}
        for i, p in enumerate(paths)
    ]


def mixed(files):
    """good, good, bad, bad, ...: with two workers splitting round robin, each gets good and bad files, and the
    last files of both workers are bad (their skips must still be counted)."""
    good, bad = files["good"], files["bad"]
    order = []
    for i in range(3):
        order += [good[2 * i], good[2 * i + 1], bad[2 * i], bad[2 * i + 1]]
    return examples(order)


def recipe(**overrides):
    return MLFOViews(output_size=(32, 32), **overrides)


# ----------------------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------------------
def test_bad_files_are_skipped_named_and_counted(files, caplog):
    dataset = VideoViewDataset(mixed(files), recipe(), return_keys=True)
    with caplog.at_level(logging.WARNING, logger="hf_vssl.data.loader"):
        samples = list(dataset)
    assert sorted(s["key"] for s in samples) == sorted(p.stem for p in files["good"])
    assert sum(int(s["num_skipped"]) for s in samples) == len(files["bad"]) == dataset.skipped.count
    assert set(dataset.skipped.by_reason) >= {
        "empty file",
        "cannot open",
        "no video stream",
        "truncated",
        "too short",
    }
    for path in files["bad"]:
        assert sum(path.name in record.getMessage() for record in caplog.records) == 1, path.name


def test_skips_are_counted_across_workers(files):
    loader = build_view_dataloader(mixed(files), recipe(), batch_size=2, num_workers=2)
    batches = iter(loader)
    assert sum(len(b["labels"]) for b in batches) == len(files["good"])
    assert sorted(batches.skipped) == sorted(map(str, files["bad"]))


def keyed(files, copies):
    """``copies`` examples of each good video under their own keys (a larger source from the same files)."""
    return [
        {"video": str(path), "label": i, "key": f"{path.stem}_{c}"}
        for c in range(copies)
        for i, path in enumerate(files["good"])
    ]


def pass_keys(batches):
    return [key for batch in batches for key in batch["keys"]]


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_a_pass_loses_at_most_one_partial_batch_and_keeps_its_order(files):
    """3 workers over 23 usable videos (and the bad files), batch 4: each worker has 7 or 8 and makes one full
    batch and a short one; the short ones are joined, so a pass trains on 20 videos (5 full batches, 3 dropped),
    where per-worker batching would train on 12. Epoch by epoch the order and the views are the same with
    persistent workers (which must follow set_epoch) as with fresh ones, and a second run repeats them."""
    source = keyed(files, 4)[:23] + examples(files["bad"])
    options = dict(batch_size=4, num_workers=3, return_keys=True, drop_last=True)
    loader = build_view_dataloader(source, recipe(), persistent_workers=True, **options)
    fresh = build_view_dataloader(source, recipe(), **options)
    for epoch in (0, 1):
        loader.dataset.set_epoch(epoch)
        fresh.dataset.set_epoch(epoch)
        batches, expected = iter(loader), list(fresh)
        got = list(batches)
        assert [len(b["labels"]) for b in got] == [4] * 5
        assert len(set(pass_keys(got))) == 20 and batches.num_dropped == 3 and batches.num_videos == 23
        assert sorted(batches.skipped) == sorted(map(str, files["bad"]))
        assert pass_keys(got) == pass_keys(expected)
        for a, b in zip(got, expected):
            assert all(torch.equal(a[k], b[k]) for k in a if k != "keys")
        if epoch == 0:
            first = got
    assert not all(torch.equal(a["crop_boxes"], b["crop_boxes"]) for a, b in zip(first, got))
    # without drop_last the remainder ends the pass: every usable video once
    everything = list(build_view_dataloader(source, recipe(), 4, 3, return_keys=True))
    assert [len(b["labels"]) for b in everything] == [4] * 5 + [3]
    assert sorted(pass_keys(everything)) == sorted(e["key"] for e in source[:23])


def test_joined_batches_pad_canvases_like_one_batch():
    """Short worker batches with canvases of different sizes join as collate_views pads within one batch."""
    from hf_vssl.data.batches import collate_views
    from hf_vssl.data.loader import _join_batches

    samples = [
        {
            "frames": torch.full((2, h, w, 3), i + 1, dtype=torch.uint8),
            "labels": torch.tensor(i),
            "key": f"k{i}",
        }
        for i, (h, w) in enumerate([(4, 6), (5, 3), (4, 6)])
    ]
    joined = _join_batches([collate_views(samples[:1]), collate_views(samples[1:])])
    expected = collate_views(samples)
    assert joined["keys"] == expected["keys"] == ["k0", "k1", "k2"]
    assert torch.equal(joined["frames"], expected["frames"]) and torch.equal(
        joined["labels"], expected["labels"]
    )


@pytest.mark.parametrize("persistent", [False, True])
def test_a_worker_with_only_bad_videos_ends_quietly_and_each_file_is_warned_once(files, persistent, caplog):
    """good, bad, good, bad, ...: worker 1 of 2 reads only bad files. The pass still delivers every good video,
    its skips are counted in every epoch, and each bad file is warned about once in the run."""
    bad = files["bad"][:3]
    source = examples([path for pair in zip(files["good"][:3], bad) for path in pair])
    loader = build_view_dataloader(source, recipe(), 2, num_workers=2, persistent_workers=persistent)
    with caplog.at_level(logging.WARNING, logger="hf_vssl.data.loader"):
        for epoch in (0, 1):
            loader.dataset.set_epoch(epoch)
            batches = iter(loader)
            assert sorted(len(b["labels"]) for b in batches) == [1, 2]
            assert sorted(batches.skipped) == sorted(map(str, bad))
    for path in bad:
        assert sum(path.name in message for message in caplog.messages) == 1, path.name
    assert loader.skipped.count == 2 * len(bad)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_all_bad_source_raises(files, num_workers):
    """Decided by the loader from every worker together: the workers end their shares quietly."""
    loader = build_view_dataloader(examples(files["bad"]), recipe(), batch_size=2, num_workers=num_workers)
    with pytest.raises(RuntimeError, match=f"None of the {len(files['bad'])} videos .* could be used"):
        list(loader)


def test_empty_source_raises():
    with pytest.raises(RuntimeError, match="empty"):
        list(VideoViewDataset([], recipe()))


def test_missing_video_column_is_a_clear_error(files):
    with pytest.raises(KeyError, match="video_column"):
        list(VideoViewDataset([{"mp4": str(files["good"][0])}], recipe()))


def test_remote_paths_are_read_by_the_data_engine(files):
    """A remote path (any fsspec URL, as a streaming Hub dataset's ``hf://``) is fetched into memory before the
    decoder sees it; one that cannot be read is skipped like any unreadable video."""
    import fsspec

    url = "memory://hf_vssl_test_loader/good_0.mp4"
    with fsspec.open(url, "wb") as handle:
        handle.write(files["good"][0].read_bytes())
    remote = [
        {"video": {"bytes": None, "path": url}, "label": 0, "key": files["good"][0].stem},
        {"video": {"bytes": None, "path": url + ".missing"}, "label": 1, "key": "missing"},
    ]
    local = VideoViewDataset(examples(files["good"][:1]), recipe())
    dataset = VideoViewDataset(remote, recipe())
    (sample,) = list(dataset)
    (expected,) = list(local)
    assert np.array_equal(sample["frames"], expected["frames"]) and int(sample["num_skipped"]) == 1
    assert dict(dataset.skipped.by_reason) == {"cannot open": 1}


def test_skipped_videos_counts_and_warns_once_per_file(caplog):
    skipped = SkippedVideos()
    with caplog.at_level(logging.WARNING, logger="hf_vssl.data.inputs"):
        skipped.record("a.mp4", "truncated")
        skipped.record("a.mp4", "truncated")
        skipped.record(VideoDecodeError("b.mp4", "cannot open", "bad header"))
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "a.mp4" in warnings[0] and "truncated" in warnings[0]
    assert "b.mp4" in warnings[1] and "bad header" in warnings[1]
    assert skipped.count == 3
    assert skipped.by_reason == {"truncated": 2, "cannot open": 1}

    restored = SkippedVideos()
    restored.load_state_dict(pickle.loads(pickle.dumps(skipped.state_dict())))
    assert (restored.count, restored.by_reason) == (3, skipped.by_reason)
    with caplog.at_level(logging.WARNING, logger="hf_vssl.data.inputs"):
        caplog.clear()
        restored.record("a.mp4", "truncated")  # already warned before the checkpoint
    assert not caplog.records and restored.count == 4

    total = SkippedVideos()
    total.merge(skipped)
    total.merge(restored.state_dict())
    assert total.count == 7 and total.by_reason["truncated"] == 5


# ----------------------------------------------------------------------------------------------------------
# batches
# ----------------------------------------------------------------------------------------------------------
def test_batches_hold_only_tensors_unless_keys_are_asked_for(files):
    batch = next(iter(build_view_dataloader(examples(files["good"]), recipe(), batch_size=3, num_workers=0)))
    assert all(isinstance(value, torch.Tensor) for value in batch.values())
    assert batch["frames"].dtype == torch.uint8 and batch["frames"].shape[:2] == (3, 32)
    assert batch["labels"].tolist() == [0, 1, 2]
    keyed = next(iter(build_view_dataloader(examples(files["good"]), recipe(), 3, 0, return_keys=True)))
    assert keyed["keys"] == [p.stem for p in files["good"][:3]]
    views = apply_views(batch, recipe())
    assert views["pixel_values"].shape == (3, 3, 16, 3, 32, 32) and "frames" not in views


def by_key(loader):
    out = {}
    for batch in loader:
        for i, key in enumerate(batch.pop("keys")):
            out[key] = {name: value[i] for name, value in batch.items()}
    return out


def test_seeded_determinism_independent_of_workers(files):
    source = examples(files["good"])
    single = by_key(build_view_dataloader(source, recipe(), 2, num_workers=0, seed=3, return_keys=True))
    parallel = by_key(build_view_dataloader(source, recipe(), 2, num_workers=2, seed=3, return_keys=True))
    other_seed = by_key(build_view_dataloader(source, recipe(), 2, num_workers=0, seed=4, return_keys=True))
    assert single.keys() == parallel.keys() == {p.stem for p in files["good"]}
    for key in single:
        for name in single[key]:
            assert torch.equal(single[key][name], parallel[key][name]), (key, name)
    assert any(not torch.equal(single[k]["crop_boxes"], other_seed[k]["crop_boxes"]) for k in single)


def test_set_epoch_changes_the_views_and_replays_them(files):
    dataset = VideoViewDataset(examples(files["good"][:3]), recipe())
    first = [s["frame_indices"] for s in dataset]
    dataset.set_epoch(1)
    second = [s["frame_indices"] for s in dataset]
    dataset.set_epoch(0)
    again = [s["frame_indices"] for s in dataset]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert any(not np.array_equal(a, b) for a, b in zip(first, second))


def test_rendering_in_workers_equals_rendering_in_the_main_process(files):
    source, r = examples(files["good"]), recipe()
    workers = stage2_placement(in_workers=True)
    in_workers = by_key(
        build_view_dataloader(source, r, 2, num_workers=2, placement=workers, return_keys=True)
    )
    in_main = {}
    for batch in build_view_dataloader(source, r, 2, num_workers=2, return_keys=True):
        keys = batch.pop("keys")
        views = apply_views(batch, r)
        for i, key in enumerate(keys):
            in_main[key] = views["pixel_values"][i]
    assert in_workers.keys() == in_main.keys()
    for key, value in in_workers.items():
        assert torch.equal(value["pixel_values"], in_main[key]), key
    # a rendered batch is never rendered again: its placement finishes it, apply_views refuses it
    batch = next(iter(build_view_dataloader(source, r, 2, num_workers=0, placement=workers)))
    assert torch.equal(workers.finish(batch, r)["pixel_values"], batch["pixel_values"])
    with pytest.raises(ValueError, match="stage-1"):
        apply_views(batch, r)


@pytest.mark.parametrize("in_workers", [False, True])
def test_worker_batches_travel_as_one_shared_block(files, in_workers):
    """Each worker batch crosses to the main process as one shared-memory block (a SharedBatch) and arrives as a
    plain dict in which only the large entry (the canvases, or the rendered pixels) is still shared memory."""
    placement = stage2_placement(in_workers=in_workers)
    loader = build_view_dataloader(examples(files["good"]), recipe(), 3, num_workers=2, placement=placement)
    large = "pixel_values" if in_workers else "frames"
    batches = list(loader)
    assert len(batches) == 2
    for batch in batches:
        assert type(batch) is dict
        assert [name for name, value in batch.items() if value.is_shared()] == [large]
        assert batch["labels"].dtype == torch.int64 and batch["crop_boxes"].shape == (3, 3, 4)


def test_stage2_placement_decides_where_stage_2_runs(files):
    """A CPU run renders in the workers; a CUDA run gets pinned stage-1 batches and renders on the GPU; the loader
    and the loop both follow the one decision."""
    source, r = examples(files["good"]), recipe()
    on_cpu = stage2_placement("cpu")
    assert on_cpu.in_workers and not on_cpu.pin_memory and on_cpu == stage2_placement(torch.device("cpu"))
    on_gpu = stage2_placement(torch.device("cuda"))
    assert not on_gpu.in_workers and on_gpu.pin_memory
    gpu_loader = build_view_dataloader(source, r, 2, num_workers=0, placement=on_gpu)
    assert gpu_loader.pin_memory and gpu_loader.collate_fn.recipe is None
    assert not stage2_placement().in_workers and not stage2_placement().pin_memory
    forced = stage2_placement("cpu", in_workers=False)
    cpu_loader = build_view_dataloader(source, r, 2, num_workers=0, placement=on_cpu)
    stage1_loader = build_view_dataloader(source, r, 2, num_workers=0, placement=forced)
    assert "pixel_values" in next(iter(cpu_loader)) and not cpu_loader.pin_memory
    assert "pixel_values" not in next(iter(stage1_loader))
    # rendering a stage-1 batch on the target device gives what the workers rendered
    rendered = forced.finish(next(iter(stage1_loader)), r)["pixel_values"]
    assert torch.equal(rendered, on_cpu.finish(next(iter(cpu_loader)), r)["pixel_values"])


def test_stage2_placement_is_logged_once(caplog):
    # a device no other test asks for, so that the decision is new to this process
    with caplog.at_level(logging.INFO, logger="hf_vssl.data.loader"):
        for _ in range(3):
            stage2_placement(torch.device("meta"))
    assert [m for m in caplog.messages if "stage 2" in m] == [
        "View stage 2 (crop, resize, flip, colour) runs on meta."
    ]


def test_streaming_datasets_source_with_workers(files, tmp_path):
    """A folder source from ``load_video_source`` (a sharded datasets.IterableDataset) splits over workers."""
    from hf_vssl.data.sources import load_video_source

    for i, path in enumerate(files["good"]):
        target = tmp_path / ("cat" if i % 2 else "dog") / path.name
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(path.read_bytes())
    source = load_video_source(tmp_path, num_shards=2)
    loader = build_view_dataloader(source, recipe(), batch_size=2, num_workers=2, return_keys=True)
    seen = by_key(loader)
    assert len(seen) == len(files["good"])
    labels = {key: int(value["labels"]) for key, value in seen.items()}
    assert sorted(set(labels.values())) == [0, 1]
