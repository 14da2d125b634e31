"""`hf_vssl.evaluation.invariance`: cosine similarity between a recipe's views, by hand and from the command line."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hf_vssl.evaluation.invariance import REVERSED, format_similarity_table, view_similarity

from .conftest import tiny_config

VIEWS = ("anchor", "spatial_positive", "temporal_positive")
TOLERANCE = 1e-6  # features are float32 (`encode_clips`), their cosines float64


class TimeWeightedEncoder(nn.Module):
    """`[N, T, C, H, W] -> [N, 2C]`: the plain mean of each channel and a mean weighted by a ramp over time, so
    that the feature changes when the frames are reversed (`time_weighted=False`: it does not)."""

    def __init__(self, time_weighted: bool = True):
        super().__init__()
        self.mix = nn.Linear(3, 3, dtype=torch.float64)
        self.time_weighted = time_weighted

    def forward(self, pixel_values):
        frames = self.mix(pixel_values.mean(dim=(3, 4)))  # [N, T, C]
        ramp = torch.linspace(-1, 1, frames.shape[1], dtype=frames.dtype)[:, None]
        second = (frames * ramp).mean(1) if self.time_weighted else frames.pow(2).mean(1)
        return torch.cat([frames.mean(1), second], dim=1)


def hand_similarity(encoder, batches, reverse_time=True):
    """The same quantities with explicit loops over videos and pairs of videos."""
    names = [
        ("anchor", "spatial_positive"),
        ("anchor", "temporal_positive"),
        ("spatial_positive", "temporal_positive"),
    ]
    index = {name: i for i, name in enumerate(VIEWS)}
    if reverse_time:
        names += [(view, REVERSED) for view in VIEWS]
    same, other = {n: [] for n in names}, {n: [] for n in names}
    for batch in batches:
        clips = batch["pixel_values"]
        for left, right in names:
            for i in range(clips.shape[0]):
                for j in range(clips.shape[0]):
                    first = encoder(clips[i, index[left]][None])[0]
                    if right == REVERSED:
                        second = encoder(clips[j, index[left]].flip(0)[None])[0]
                    else:
                        second = encoder(clips[j, index[right]][None])[0]
                    cosine = F.cosine_similarity(first, second, dim=0).item()
                    (same if i == j else other)[left, right].append(cosine)
    return {
        n: {"same_video": sum(same[n]) / len(same[n]), "other_videos": sum(other[n]) / len(other[n])}
        for n in names
    }


def random_batches(sizes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [
        {"pixel_values": torch.rand(size, 3, 5, 3, 4, 4, generator=generator, dtype=torch.float64)}
        for size in sizes
    ]


def test_similarities_equal_a_hand_computation():
    torch.manual_seed(0)
    encoder = TimeWeightedEncoder()
    batches = random_batches([3, 4])
    results = view_similarity(encoder, batches, VIEWS)
    expected = hand_similarity(encoder, batches)
    assert list(results) == list(expected)
    for name, row in expected.items():
        assert results[name]["same_video"] == pytest.approx(row["same_video"], abs=TOLERANCE)
        assert results[name]["other_videos"] == pytest.approx(row["other_videos"], abs=TOLERANCE)
        assert results[name]["gap"] == pytest.approx(row["same_video"] - row["other_videos"], abs=TOLERANCE)
    # the time-weighted encoder sees the reversal; a time-symmetric one cannot
    assert results["anchor", REVERSED]["same_video"] < 1 - 1e-3
    symmetric = view_similarity(TimeWeightedEncoder(time_weighted=False), batches, VIEWS)
    assert symmetric["anchor", REVERSED]["same_video"] == pytest.approx(1.0, abs=TOLERANCE)


def test_max_videos_stops_inside_a_batch_and_reverse_time_can_be_left_out():
    torch.manual_seed(0)
    encoder = TimeWeightedEncoder()
    batches = random_batches([4, 4, 4])
    results = view_similarity(encoder, batches, VIEWS, max_videos=6, reverse_time=False)
    first_six = [batches[0], {"pixel_values": batches[1]["pixel_values"][:2]}]
    expected = hand_similarity(encoder, first_six, reverse_time=False)
    assert list(results) == list(expected)
    for name, row in expected.items():
        assert results[name]["same_video"] == pytest.approx(row["same_video"], abs=TOLERANCE)
        assert results[name]["other_videos"] == pytest.approx(row["other_videos"], abs=TOLERANCE)
    assert "| anchor ~ spatial_positive |" in format_similarity_table(results)


def test_bad_input_is_a_clear_error():
    encoder = TimeWeightedEncoder()
    with pytest.raises(ValueError, match="4 views"):
        view_similarity(encoder, random_batches([2]), VIEWS[:2] + ("x", "y"))
    with pytest.raises(ValueError, match="no video"):
        view_similarity(encoder, [], VIEWS)


def test_command_line_on_a_saved_encoder(tmp_path, tiny_folders, capsys):
    from hf_vssl import HDCModel
    from hf_vssl.evaluation.invariance import main

    folder = tmp_path / "encoder"
    HDCModel(tiny_config("hdc")).save_pretrained(folder)
    results = main(
        [
            "--model",
            str(folder),
            "--data",
            str(tiny_folders["train"]),
            "--recipe",
            "{flip_prob: 0.0}",
            "--max_videos",
            "6",
        ]
    )
    table = capsys.readouterr().out
    assert len(results) == 6 and "| anchor ~ reversed |" in table
    assert all(-1 <= row["same_video"] <= 1 for row in results.values())

    # labels are not needed: the same videos side by side, without class sub-folders
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    for video in sorted(tiny_folders["train"].rglob("*.mp4"))[:3]:
        (unlabelled / video.name).write_bytes(video.read_bytes())
    assert len(main(["--model", str(folder), "--data", str(unlabelled), "--max_videos", "3"])) == 6
    capsys.readouterr()

    empty = tmp_path / "empty"
    empty.mkdir()
    for argv, message in [
        (["--model", str(folder), "--data", str(empty)], "holds no video files"),
        (["--model", str(folder), "--data", str(unlabelled), "--max_videos", "0"], "max_videos"),
        (
            ["--model", str(tmp_path / "missing"), "--data", str(tiny_folders["train"])],
            "no such model folder",
        ),
        (["--model", str(folder), "--data", str(tmp_path / "nothing")], "does not exist"),
        (["--model", str(folder), "--data", str(tiny_folders["train"]), "--recipe", "[1]"], "YAML mapping"),
        (
            ["--model", str(folder), "--data", str(tiny_folders["train"]), "--recipe", "{flip: 0}"],
            "flip_prob",
        ),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
