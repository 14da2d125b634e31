"""Tests for hf_vssl.evaluation: metrics on constructed features with known answers, brute-force references,
feature extraction (clip averaging, video grouping, model mode) and extraction across two real processes."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers.modeling_outputs import BaseModelOutputWithPooling

from hf_vssl.evaluation import (
    EvalRecord,
    EvalResults,
    LinearProbeClassifier,
    VideoFeatures,
    aggregate_by_video,
    center_and_normalize,
    evaluate_features,
    extract_features,
    format_results_table,
    knn_classify,
    linear_probe,
    multi_view_accuracy,
    recall_at_k,
    retrieval_recall,
    topk_accuracy,
    train_linear_probe,
)

# ----------------------------------------------------------------------------------------------------------------
# constructed features


def square_design():
    """Four train videos on the axes (train mean zero) and four queries whose ranks are known by hand.

    query 0 (class 0) -> nearest is class 0                     : hit at rank 1
    query 1 (class 0) -> nearest is class 1, then class 0       : hit at rank 2
    query 2 (class 1) -> nearest classes 2, 3, then 1           : hit at rank 3
    query 3 (class 3) -> nearest is class 3                     : hit at rank 1
    """
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    train_labels = torch.tensor([0, 1, 2, 3])
    test = torch.tensor([[1.0, 0.1], [0.1, 1.0], [-1.0, -0.2], [0.3, -1.0]])
    test_labels = torch.tensor([0, 0, 1, 3])
    return train, train_labels, test, test_labels


def offset_design():
    """Classes separated along x; a query's small y component points at the other class.

    Centred, the x sign decides and every query finds its class. With a large constant offset along x and no
    centring, cosine similarity only sees the y components and every query finds the other class.
    """
    train = torch.tensor([[1.0, 0.5], [-1.0, -0.5]])
    train_labels = torch.tensor([0, 1])
    test = torch.tensor([[1.0, -0.4], [-1.0, 0.4]])
    test_labels = torch.tensor([0, 1])
    return train, train_labels, test, test_labels


def gaussian_clusters(num_classes, per_class, dim, spread, seed, offset=0.0):
    """``per_class`` noisy samples around each class centre; the centres depend only on (classes, dim)."""
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(1234)) * 3
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    features = centres[labels] + spread * torch.randn(labels.numel(), dim, generator=generator) + offset
    return features, labels


def reference_unit_rows(rows, mean):
    """Centre by ``mean`` and L2-normalise, with explicit Python loops (float64)."""
    out = []
    for row in rows.tolist():
        centred = [x - m for x, m in zip(row, mean)]
        norm = math.sqrt(sum(x * x for x in centred))
        out.append([x / norm for x in centred])
    return out


def reference_ranking(train, test):
    """For each test row, train indices sorted by decreasing cosine similarity after train-mean centring."""
    mean = [sum(col) / len(col) for col in zip(*train.tolist())]
    gallery = reference_unit_rows(train, mean)
    rankings = []
    for query in reference_unit_rows(test, mean):
        similarity = [sum(q * g for q, g in zip(query, item)) for item in gallery]
        rankings.append((sorted(range(len(gallery)), key=lambda j: -similarity[j]), similarity))
    return rankings


def reference_recall(train, train_labels, test, test_labels, k):
    hits = 0
    for (order, _), label in zip(reference_ranking(train, test), test_labels.tolist()):
        hits += any(train_labels[j].item() == label for j in order[:k])
    return hits / len(test_labels)


def reference_knn(train, train_labels, test, test_labels, k, temperature, weighting):
    correct = 0
    for (order, similarity), label in zip(reference_ranking(train, test), test_labels.tolist()):
        votes = {}
        for j in order[:k]:
            weight = math.exp(similarity[j] / temperature) if weighting == "exp" else 1.0
            votes[train_labels[j].item()] = votes.get(train_labels[j].item(), 0.0) + weight
        best = max(votes.values())
        prediction = min(c for c, v in votes.items() if v == best)  # ties go to the smaller class id
        correct += prediction == label
    return correct / len(test_labels)


# ----------------------------------------------------------------------------------------------------------------
# retrieval


def test_retrieval_recall_hand_computed():
    train, train_labels, test, test_labels = square_design()
    recall = retrieval_recall(train, train_labels, test, test_labels, ks=(1, 2, 3, 4))
    assert recall == {"R@1": 0.5, "R@2": 0.75, "R@3": 1.0, "R@4": 1.0}


def test_retrieval_k_larger_than_train_is_clipped_with_warning():
    train, train_labels, test, test_labels = square_design()
    with pytest.warns(
        UserWarning, match="retrieval k=5, 10, 20, 50 is larger than the train split \\(4 videos\\)"
    ):
        recall = retrieval_recall(train, train_labels, test, test_labels)
    assert list(recall) == ["R@1", "R@5", "R@10", "R@20", "R@50"]
    assert recall["R@1"] == 0.5
    assert recall["R@5"] == recall["R@50"] == 1.0


def test_centring_by_train_mean_undoes_a_constant_offset():
    train, train_labels, test, test_labels = offset_design()
    assert retrieval_recall(train, train_labels, test, test_labels, ks=(1,)) == {"R@1": 1.0}
    offset = torch.tensor([100.0, 0.0])
    shifted = (train + offset, train_labels, test + offset, test_labels)
    assert retrieval_recall(*shifted, ks=(1,)) == {"R@1": 1.0}
    assert knn_classify(*shifted, k=1) == {"top1": 1.0}
    # without centring the same offset sends every query to the other class
    assert retrieval_recall(*shifted, ks=(1,), center="none") == {"R@1": 0.0}
    assert knn_classify(*shifted, k=1, center="none") == {"top1": 0.0}


def test_center_modes():
    train, _ = gaussian_clusters(3, 4, 5, 1.0, seed=1, offset=2.0)
    test, _ = gaussian_clusters(3, 2, 5, 1.0, seed=2, offset=-3.0)
    by_train = center_and_normalize(train, test, "train")
    mean = train.mean(0)
    torch.testing.assert_close(by_train[1], nn.functional.normalize(test - mean, dim=1))
    per_split = center_and_normalize(train, test, "per_split")
    torch.testing.assert_close(per_split[1], nn.functional.normalize(test - test.mean(0), dim=1))
    none = center_and_normalize(train, test, "none")
    torch.testing.assert_close(none[0], nn.functional.normalize(train, dim=1))
    for result in (by_train, per_split, none):
        torch.testing.assert_close(result[0].norm(dim=1), torch.ones(train.shape[0]))
    with pytest.raises(ValueError, match="center must be"):
        center_and_normalize(train, test, "mean")


def test_retrieval_recall_matches_brute_force_and_is_monotone():
    train, train_labels = gaussian_clusters(5, 8, 6, 3.0, seed=3, offset=1.5)
    test, test_labels = gaussian_clusters(5, 5, 6, 3.0, seed=4, offset=1.5)
    ks = (1, 2, 5, 10, 20, 40)
    recall = retrieval_recall(train, train_labels, test, test_labels, ks=ks, chunk_size=7)
    values = [recall[f"R@{k}"] for k in ks]
    assert values == sorted(values) and values[0] < values[-1] == 1.0
    for k in ks:
        assert recall[f"R@{k}"] == pytest.approx(reference_recall(train, train_labels, test, test_labels, k))


def test_recall_at_k_primitive():
    neighbour_labels = torch.tensor([[1, 2, 0], [0, 0, 0], [2, 1, 1]])
    query_labels = torch.tensor([0, 0, 1])
    assert recall_at_k(neighbour_labels, query_labels, ks=(1, 2, 3, 9)) == {
        1: pytest.approx(1 / 3),
        2: pytest.approx(2 / 3),
        3: 1.0,
        9: 1.0,
    }


# ----------------------------------------------------------------------------------------------------------------
# kNN


@pytest.mark.parametrize("k,weighting", [(1, "exp"), (5, "exp"), (7, "uniform"), (20, "exp")])
def test_knn_matches_brute_force(k, weighting):
    train, train_labels = gaussian_clusters(4, 10, 6, 2.5, seed=5, offset=-1.0)
    test, test_labels = gaussian_clusters(4, 6, 6, 2.5, seed=6, offset=-1.0)
    result = knn_classify(train, train_labels, test, test_labels, k=k, temperature=0.07, weighting=weighting)
    expected = reference_knn(train, train_labels, test, test_labels, k, 0.07, weighting)
    assert result == {"top1": pytest.approx(expected)}


def test_knn_hand_computed_and_weighting():
    train, train_labels, test, test_labels = square_design()
    assert knn_classify(train, train_labels, test, test_labels, k=1) == {"top1": 0.5}
    # query 1 (class 0): neighbours class 1 (cos 0.995) and class 0 (cos 0.0995). Similarity weighting lets
    # the nearest win; uniform votes tie and the tie goes to the smaller class id, 0, which is right.
    one_query = (train, train_labels, test[1:2], test_labels[1:2])
    assert knn_classify(*one_query, k=2, weighting="exp") == {"top1": 0.0}
    assert knn_classify(*one_query, k=2, weighting="uniform") == {"top1": 1.0}


def test_knn_noncontiguous_labels_and_unseen_test_class():
    train, train_labels, test, test_labels = square_design()
    relabel = torch.tensor([3, 70, 9, 1000])
    result = knn_classify(train, relabel[train_labels], test, relabel[test_labels], k=1)
    assert result == {"top1": 0.5}
    # query 0 is now of a class no train video has: it can only be an error
    unseen = relabel[test_labels].clone()
    unseen[0] = 5
    assert knn_classify(train, relabel[train_labels], test, unseen, k=1) == {"top1": 0.25}


def test_knn_k_larger_than_train_is_clipped():
    train, train_labels, test, test_labels = square_design()
    with pytest.warns(UserWarning, match="knn k=20 is larger than the train split \\(4 videos\\)"):
        clipped = knn_classify(train, train_labels, test, test_labels, k=20)
    assert clipped == knn_classify(train, train_labels, test, test_labels, k=4)


# ----------------------------------------------------------------------------------------------------------------
# linear probe


def test_linear_probe_separates_linearly_separable_features():
    train, train_labels = gaussian_clusters(6, 20, 16, 0.5, seed=7, offset=10.0)
    test, test_labels = gaussian_clusters(6, 10, 16, 0.5, seed=7, offset=10.0)
    test = test + 0.3 * torch.randn(test.shape, generator=torch.Generator().manual_seed(8))
    result = linear_probe(train, train_labels, test, test_labels, epochs=30, batch_size=32)
    assert result == {"top1": 1.0, "top5": 1.0}


def test_linear_probe_is_at_chance_on_random_labels():
    generator = torch.Generator().manual_seed(9)
    train, test = torch.randn(400, 32, generator=generator), torch.randn(400, 32, generator=generator)
    train_labels = torch.randint(0, 4, (400,), generator=generator)
    test_labels = torch.randint(0, 4, (400,), generator=generator)
    result = linear_probe(train, train_labels, test, test_labels, epochs=30, batch_size=64)
    assert abs(result["top1"] - 0.25) < 0.1  # chance; the std of the estimate is about 0.02
    assert result["top5"] == 1.0  # only 4 classes: top-5 is clipped to all of them


def test_linear_probe_is_deterministic_given_seed():
    train, train_labels = gaussian_clusters(5, 12, 8, 4.0, seed=10)
    test, test_labels = gaussian_clusters(5, 6, 8, 4.0, seed=11)
    kwargs = {"epochs": 10, "batch_size": 16}
    first = linear_probe(train, train_labels, test, test_labels, seed=3, **kwargs)
    assert first == linear_probe(train, train_labels, test, test_labels, seed=3, **kwargs)
    targets = train_labels
    probe_a = train_linear_probe(train, targets, 5, seed=3, **kwargs)
    probe_b = train_linear_probe(train, targets, 5, seed=3, **kwargs)
    probe_c = train_linear_probe(train, targets, 5, seed=4, **kwargs)
    torch.testing.assert_close(probe_a.state_dict(), probe_b.state_dict(), rtol=0, atol=0)
    assert not torch.equal(probe_a.classifier.weight, probe_c.classifier.weight)


def test_linear_probe_normalisation_uses_train_statistics():
    train, _ = gaussian_clusters(3, 30, 6, 2.0, seed=12, offset=5.0)
    probe = LinearProbeClassifier.from_train_features(train, num_classes=3)
    standardized = (train - probe.mean) / probe.std
    torch.testing.assert_close(standardized.mean(0), torch.zeros(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(standardized.var(0, unbiased=False), torch.ones(6), atol=1e-3, rtol=0)
    torch.testing.assert_close(probe.normalize(train).norm(dim=1), torch.ones(train.shape[0]))
    # test features are standardised with the train statistics, not their own
    shifted = train + 100.0
    train_std = train.var(0, unbiased=False).sqrt()
    expected = nn.functional.normalize((shifted - train.mean(0)) / train_std, dim=1)
    torch.testing.assert_close(probe.normalize(shifted), expected, atol=1e-4, rtol=0)


def test_linear_probe_trains_under_no_grad():
    train, train_labels = gaussian_clusters(3, 10, 4, 0.3, seed=13)
    with torch.no_grad():
        result = linear_probe(train, train_labels, train, train_labels, epochs=20)
    assert result["top1"] == 1.0


def test_topk_accuracy_primitive():
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    targets = torch.tensor([2, 0, 0])
    assert topk_accuracy(scores, targets, ks=(1, 2, 5)) == {
        1: pytest.approx(1 / 3),
        2: pytest.approx(2 / 3),
        5: 1.0,
    }


# ----------------------------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("protocol", ["linear_probe", "knn", "retrieval"])
def test_unlabelled_data_is_rejected(protocol):
    train, train_labels, test, test_labels = square_design()
    with pytest.raises(
        ValueError, match=f"{protocol} evaluation needs labels.*4 of 4 videos in the train split"
    ):
        evaluate_features((train, torch.full((4,), -1)), (test, test_labels), protocols=(protocol,))
    with pytest.raises(
        ValueError, match=f"{protocol} evaluation needs labels.*1 of 4 videos in the test split"
    ):
        partial = test_labels.clone()
        partial[2] = -1
        evaluate_features((train, train_labels), (test, partial), protocols=(protocol,))
    with pytest.raises(ValueError, match=f"{protocol} evaluation needs labels, but the test split has none"):
        evaluate_features((train, train_labels), {"features": test}, protocols=(protocol,))


def test_bad_features_are_rejected():
    train, train_labels, test, test_labels = square_design()
    with pytest.raises(ValueError, match="train features are empty"):
        retrieval_recall(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), test, test_labels)
    with pytest.raises(ValueError, match="test features must have shape"):
        knn_classify(train, train_labels, test[0], test_labels)
    with pytest.raises(ValueError, match="train features have dim 2 but test features have dim 3"):
        linear_probe(train, train_labels, torch.zeros(4, 3), test_labels)
    with pytest.raises(ValueError, match="NaN or inf in 1 of 4 rows"):
        bad = test.clone()
        bad[1, 0] = float("nan")
        retrieval_recall(train, train_labels, bad, test_labels)
    with pytest.raises(ValueError, match="train has 4 feature rows but 3 labels"):
        knn_classify(train, train_labels[:3], test, test_labels)
    with pytest.raises(ValueError, match="must be integer class ids"):
        knn_classify(train, train_labels.float(), test, test_labels)
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate_features((train, train_labels), (test, test_labels), protocols=("svm",))


# ----------------------------------------------------------------------------------------------------------------
# suite


def test_evaluate_features_keys_and_table():
    train, train_labels = gaussian_clusters(4, 15, 8, 0.5, seed=14)
    test, test_labels = gaussian_clusters(4, 5, 8, 0.5, seed=15)
    results = evaluate_features(
        VideoFeatures(train, train_labels, list(range(60))),
        (test, test_labels),
        linear_probe_kwargs={"epochs": 20},
    )
    assert list(results) == [
        "linear_probe/top1",
        "linear_probe/top5",
        "knn/top1",
        "retrieval/R@1",
        "retrieval/R@5",
        "retrieval/R@10",
        "retrieval/R@20",
        "retrieval/R@50",
    ]
    assert all(value == 1.0 for value in results.values())
    knn_only = evaluate_features(
        (train, train_labels), (test, test_labels), protocols="knn", knn_kwargs={"k": 1}
    )
    assert knn_only == {"knn/top1": 1.0}
    table = format_results_table(
        {"pretrained": results, "random init": {"knn/top1": 0.25, "retrieval/R@1": 0.123}},
        metrics=["knn/top1", "retrieval/R@1", "linear_probe/top1"],
    )
    assert table.splitlines() == [
        "| model | knn/top1 | retrieval/R@1 | linear_probe/top1 |",
        "|---|---:|---:|---:|",
        "| pretrained | 100.0 | 100.0 | 100.0 |",
        "| random init | 25.0 | 12.3 | - |",
    ]
    with pytest.raises(ValueError, match="empty"):
        format_results_table({})


# ----------------------------------------------------------------------------------------------------------------
# the results record


def test_results_record_from_protocol_output_round_trips_through_json(tmp_path):
    metrics = {"linear_probe/top1": 47 / 96, "knn/top1": 0.25, "retrieval/R@1": 0.5, "retrieval/R@5": 1.0}
    results = EvalResults.from_metrics(
        metrics, dataset="ucf101", split="test", measured_with="5 clips x center crop"
    )
    assert [(r.protocol, r.metric, r.value) for r in results] == [
        ("linear_probe", "top1", 47 / 96),
        ("knn", "top1", 0.25),
        ("retrieval", "R@1", 0.5),
        ("retrieval", "R@5", 1.0),
    ]
    assert results.metrics() == metrics
    # the file keeps the exact fraction; what a card shows is rounded to one decimal of a percent
    loaded = EvalResults.load(results.save(tmp_path / "results.json"))
    assert loaded == results and loaded.records[0].value == 47 / 96
    assert [r.percent for r in loaded] == [49.0, 25.0, 50.0, 100.0]
    assert [(r.protocol_name, r.metric_type, r.metric_name) for r in loaded] == [
        ("Linear probe", "accuracy", "top-1 accuracy"),
        ("kNN", "accuracy", "top-1 accuracy"),
        ("Retrieval", "recall", "Recall@1"),
        ("Retrieval", "recall", "Recall@5"),
    ]
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["results"][1] == {
        "protocol": "knn",
        "metric": "top1",
        "value": 0.25,
        "dataset": "ucf101",
        "split": "test",
        "measured_with": "5 clips x center crop",
    }
    other_split = EvalResults.from_metrics({"knn/top1": 0.5}, dataset="ucf101", split="validation")
    assert len(results + other_split) == 5
    with pytest.raises(ValueError, match="linear_probe top1 on ucf101 \\(test\\) is given twice"):
        results + results


@pytest.mark.parametrize(
    "record, message",
    [
        ({"value": 61.5}, "fraction in \\[0, 1\\]"),  # a percentage where a fraction belongs
        ({"value": math.nan}, "fraction"),
        ({"value": True}, "fraction"),
        ({"value": "0.5"}, "fraction"),
        ({"protocol": "linear"}, "unknown protocol 'linear'"),
        ({"metric": "accuracy"}, "unknown metric 'accuracy'"),
        ({"dataset": ""}, "needs the dataset"),
        ({"split": None}, "split must be a string"),
    ],
)
def test_results_record_rejects_what_the_protocols_never_write(record, message):
    fields = {"protocol": "knn", "metric": "top1", "value": 0.5, "dataset": "d", "split": "test", **record}
    with pytest.raises(ValueError, match=message):
        EvalRecord(**fields)
    text = json.dumps({"results": [fields]})
    with pytest.raises(ValueError, match=f"r.json: results\\[0\\]: .*{message}"):
        EvalResults.from_json(text, source="r.json")


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"dataset": "d", "knn": {"top1": 50.0}}', 'expected {"results": \\[records\\]}'),
        ('[{"protocol": "knn"}]', "expected"),
        (
            '{"results": [{"protocol": "knn", "metric": "top1", "value": 0.5}]}',
            "missing \\['dataset', 'split'\\]",
        ),
        (
            '{"results": [{"protocol": "knn", "metric": "top1", "value": 0.5, "dataset": "d", "split": "t", '
            '"dataset_name": "D"}]}',
            "unknown \\['dataset_name'\\]",
        ),
        ("{not json", "not valid JSON"),
    ],
)
def test_results_file_of_another_shape_is_refused(text, message):
    with pytest.raises(ValueError, match=f"r.json.*{message}"):
        EvalResults.from_json(text, source="r.json")


# ----------------------------------------------------------------------------------------------------------------
# fine-tuned classifiers


class _ViewLogits(nn.Module):
    """A "classifier" whose logits for a clip are the clip's first pixels (so tests choose them)."""

    def forward(self, pixel_values):
        return SimpleNamespace(logits=pixel_values.flatten(1)[:, :3])


class _FinishedPlacement:
    """Batches that are already rendered: `finish` hands them on."""

    def finish(self, batch, recipe):
        return batch


def test_multi_view_accuracy_averages_the_softmax_over_views():
    # Video 0, true class 2: two views say class 0 a little, one says class 2 strongly. A vote over views gives 0;
    # the mean softmax gives 2. Video 1, true class 1: every view says class 1.
    logits = torch.tensor(
        [
            [[1.0, 0.0, 0.8], [1.0, 0.0, 0.8], [0.0, 0.0, 9.0]],
            [[0.0, 5.0, 0.0], [0.0, 4.0, 1.0], [1.0, 3.0, 0.0]],
        ]
    )
    pixel_values = (
        logits[:, :, None, None, None, :].expand(2, 3, 1, 1, 1, 3).contiguous()
    )  # [B, V, T, C, H, W]
    batches = [{"pixel_values": pixel_values, "labels": torch.tensor([2, 1])}]
    model = _ViewLogits().train()
    assert multi_view_accuracy(model, batches, None, _FinishedPlacement()) == 1.0
    assert model.training
    wrong = [{"pixel_values": pixel_values, "labels": torch.tensor([0, 1])}]
    assert multi_view_accuracy(model, wrong, None, _FinishedPlacement()) == 0.5


# ----------------------------------------------------------------------------------------------------------------
# feature extraction


class TinyEncoder(nn.Module):
    """Stand-in encoder: ``[B, T, C, H, W]`` -> non-linear pooled feature ``[B, D]``.

    Non-linear on purpose: the mean of clip features then differs from the feature of the mean clip. Records
    whether it ran in training mode and with gradients enabled.
    """

    def __init__(self, channels=3, dim=4):
        super().__init__()
        self.proj = nn.Linear(channels, dim)
        self.dropout = nn.Dropout(0.5)
        self.calls = []

    def forward(self, pixel_values):
        self.calls.append((self.training, torch.is_grad_enabled(), pixel_values.shape[0]))
        pooled = torch.tanh(3 * self.proj(pixel_values.mean(dim=(1, 3, 4))))
        pooled = self.dropout(pooled)
        return BaseModelOutputWithPooling(
            last_hidden_state=pooled[:, :, None, None, None], pooler_output=pooled
        )


def clip_feature(model, clip):
    """Reference feature of a single clip ``[T, C, H, W]``, one forward each."""
    return model(pixel_values=clip[None]).pooler_output[0]


def random_clips(*shape, seed):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_extract_features_averages_clips_within_an_item():
    torch.manual_seed(0)
    model = TinyEncoder().train()
    pixel_values = random_clips(5, 3, 2, 3, 4, 4, seed=0)  # [B=5 videos, N=3 clips, T, C, H, W]
    batches = [
        {
            "pixel_values": pixel_values[:3],
            "label": torch.tensor([0, 1, 2]),
            "video_index": torch.tensor([10, 11, 12]),
        },
        {
            "pixel_values": pixel_values[3:],
            "label": torch.tensor([0, 1]),
            "video_index": torch.tensor([13, 14]),
        },
    ]
    result = extract_features(model, batches)
    features, labels, video_ids = result  # unpacks like a tuple
    assert video_ids == [10, 11, 12, 13, 14]
    assert labels.tolist() == [0, 1, 2, 0, 1]
    assert features.dtype == torch.float32 and not features.requires_grad
    model.eval()
    with torch.no_grad():
        expected = torch.stack(
            [torch.stack([clip_feature(model, c) for c in video]).mean(0) for video in pixel_values]
        )
        of_mean_clip = torch.stack([clip_feature(model, video.mean(0)) for video in pixel_values])
    torch.testing.assert_close(features, expected)
    assert not torch.allclose(features, of_mean_clip, atol=1e-3)  # averaging happens on features
    # all clips of a batch go through the model together, unless bounded
    assert [call[2] for call in model.calls[:2]] == [9, 6]
    chunked = extract_features(model, batches, clips_per_forward=4)
    torch.testing.assert_close(chunked.features, expected)


def test_extract_features_runs_in_eval_mode_without_grad_and_restores_mode():
    model = TinyEncoder().train()
    batches = [{"pixel_values": random_clips(2, 2, 3, 4, 4, seed=1)}]
    extract_features(model, batches)
    assert model.calls == [(False, False, 2)]
    assert model.training
    model.eval()
    extract_features(model, batches)
    assert not model.training


def test_extract_features_casts_pixels_to_the_model_dtype():
    torch.manual_seed(0)
    model = TinyEncoder().eval()
    clips = random_clips(3, 2, 3, 4, 4, seed=6)
    with torch.no_grad():
        expected = model(pixel_values=clips).pooler_output
    result = extract_features(model.double(), [{"pixel_values": clips}])
    assert model.calls[-1] == (False, False, 3)
    assert result.features.dtype == torch.float32
    torch.testing.assert_close(result.features, expected)
    with pytest.raises(RuntimeError):  # an explicit dtype wins over the model's
        extract_features(model, [{"pixel_values": clips}], dtype=torch.float32)


def test_extract_features_groups_items_of_one_video_across_batches():
    torch.manual_seed(0)
    model = TinyEncoder().eval()
    clips = random_clips(6, 2, 3, 4, 4, seed=2)  # six single clips [T, C, H, W]
    batches = [
        # video "a": 2 clips in one item + 1 clip in a later batch; video "b": 2 clips in one item
        {
            "pixel_values": torch.stack([clips[0:2], clips[2:4]]),
            "key": ["a", "b"],
            "label": torch.tensor([3, 5]),
        },
        {"pixel_values": clips[4:6], "key": ["c", "a"], "label": torch.tensor([4, 3])},
    ]
    result = extract_features(model, batches)
    assert result.video_ids == ["a", "b", "c"]
    assert result.labels.tolist() == [3, 5, 4]
    with torch.no_grad():
        single = torch.stack([clip_feature(model, c) for c in clips])
    expected = torch.stack([single[[0, 1, 5]].mean(0), single[[2, 3]].mean(0), single[4]])
    torch.testing.assert_close(result.features, expected)


def test_extract_features_with_a_dataloader_and_no_ids_or_labels():
    model = TinyEncoder().eval()
    clips = random_clips(5, 2, 3, 4, 4, seed=3)
    dataset = [{"pixel_values": clip} for clip in clips]
    result = extract_features(model, DataLoader(dataset, batch_size=2))
    assert result.video_ids == [0, 1, 2, 3, 4]
    assert result.labels.tolist() == [-1] * 5
    with torch.no_grad():
        torch.testing.assert_close(result.features, model(pixel_values=clips).pooler_output)
    # unlabelled features are refused by labelled protocols with a clear message
    with pytest.raises(ValueError, match="retrieval evaluation needs labels"):
        evaluate_features(result, result, protocols=("retrieval",))


def test_extract_features_errors():
    model = TinyEncoder()
    with pytest.raises(ValueError, match="data source is empty"):
        extract_features(model, [])
    with pytest.raises(ValueError, match="mapping with 'pixel_values'; got \\['video'\\]"):
        extract_features(model, [{"video": torch.zeros(1, 2, 3, 4, 4)}])
    with pytest.raises(ValueError, match="got shape \\(2, 3, 4, 4\\)"):
        extract_features(model, [{"pixel_values": torch.zeros(2, 3, 4, 4)}])
    with pytest.raises(ValueError, match="video 'a' has clips with different labels"):
        batch = {"pixel_values": torch.zeros(2, 2, 3, 4, 4), "key": ["a", "a"], "label": torch.tensor([0, 1])}
        extract_features(model, [batch])

    class NoPooler(nn.Module):
        def forward(self, pixel_values):
            return {"last_hidden_state": pixel_values}

    with pytest.raises(TypeError, match="without a `pooler_output`"):
        extract_features(NoPooler(), [{"pixel_values": torch.zeros(1, 2, 3, 4, 4)}])


def test_aggregate_by_video_weights_items_by_clip_count():
    features = torch.tensor([[0.0, 0.0], [3.0, 3.0], [1.0, 2.0]])
    result = aggregate_by_video(features, torch.tensor([2, 1, 4]), torch.tensor([1, 1, 0]), ["x", "x", "y"])
    torch.testing.assert_close(result.features, torch.tensor([[1.0, 1.0], [1.0, 2.0]]))
    assert result.video_ids == ["x", "y"] and result.labels.tolist() == [1, 0]


def test_extract_features_with_mlfo_model():
    hf_vssl = pytest.importorskip("hf_vssl")
    if not hasattr(hf_vssl, "MLFOModel"):
        pytest.skip("hf_vssl.MLFOModel is not available yet")
    config = hf_vssl.MLFOConfig(
        backbone="r3d",
        embedding_size=8,
        hidden_sizes=[8, 16, 32, 64],
        depths=[1, 1, 1, 1],
        num_frames=8,
        image_size=32,
    )
    torch.manual_seed(0)
    model = hf_vssl.MLFOModel(config)
    pixel_values = random_clips(3, 2, 8, 3, 32, 32, seed=4)  # [B, N_clips, T, C, H, W]
    result = extract_features(model, [{"pixel_values": pixel_values, "label": torch.tensor([0, 1, 0])}])
    assert result.features.shape == (3, 64)
    model.eval()
    with torch.no_grad():
        expected = torch.stack([model(pixel_values=video).pooler_output.mean(0) for video in pixel_values])
    torch.testing.assert_close(result.features, expected, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# two real processes with accelerate


def _extract_on_two_processes(model, dataset, out_dir):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # forked from a pytest process that may hold one
    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == 2
    prepared = accelerator.prepare(model)
    with_ids = accelerator.prepare(DataLoader(dataset, batch_size=2))
    without_ids = accelerator.prepare(
        DataLoader([{"pixel_values": d["pixel_values"]} for d in dataset], batch_size=2)
    )
    string_keys = [{k: d[k] for k in ("pixel_values", "label", "key")} for d in dataset]
    with_keys = accelerator.prepare(DataLoader(string_keys, batch_size=2))
    results = {
        "with_ids": extract_features(prepared, with_ids, accelerator=accelerator),
        "with_keys": extract_features(prepared, with_keys, accelerator=accelerator),
        "without_ids": extract_features(prepared, without_ids, accelerator=accelerator),
    }
    torch.save(
        {name: tuple(r) for name, r in results.items()}, f"{out_dir}/rank{accelerator.process_index}.pt"
    )


def test_extract_features_across_two_processes(tmp_path):
    from accelerate import debug_launcher

    torch.manual_seed(0)
    model = TinyEncoder().eval()
    clips = random_clips(7, 2, 3, 4, 4, seed=5)
    # 7 items on 2 processes with batches of 2: accelerate pads the last batch with repeated samples
    dataset = [
        {"pixel_values": clip, "label": (i // 2) % 3, "key": f"video{i // 2}", "video_index": i // 2}
        for i, clip in enumerate(clips)
    ]
    debug_launcher(_extract_on_two_processes, args=(model, dataset, str(tmp_path)), num_processes=2)
    reference = extract_features(model, DataLoader(dataset, batch_size=2))
    for rank in (0, 1):
        results = torch.load(tmp_path / f"rank{rank}.pt")
        features, labels, ids = results["with_ids"]
        order = sorted(range(len(ids)), key=ids.__getitem__)
        assert sorted(ids) == reference.video_ids == [0, 1, 2, 3]
        torch.testing.assert_close(features[order], reference.features)
        assert labels[order].tolist() == reference.labels.tolist()
        features, labels, keys = results["with_keys"]  # strings travel through gather_object
        order = sorted(range(len(keys)), key=keys.__getitem__)
        assert sorted(keys) == ["video0", "video1", "video2", "video3"]
        torch.testing.assert_close(features[order], reference.features)
        # without ids every gathered item is a video: duplicated padding would show up as extra rows
        features, _, ids = results["without_ids"]
        assert len(ids) == 7
        with torch.no_grad():
            expected = model(pixel_values=clips).pooler_output
        matched = torch.cdist(features, expected).argmin(dim=1)
        assert sorted(matched.tolist()) == list(range(7))
        torch.testing.assert_close(features, expected[matched])


def test_linear_probe_equals_a_plain_loop_written_from_its_description():
    """Full-batch probe against a hand-written float64 loop: standardise with the train statistics (biased
    variance + 1e-5), L2-normalise, N(0, 0.01) weights from the seed, SGD with momentum and weight decay by
    hand, learning rate / 10 after 60% and 80% of the epochs."""
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(24, 6, generator=generator, dtype=torch.float64)
    labels = torch.arange(24) % 3
    test = torch.randn(10, 6, generator=generator, dtype=torch.float64)
    epochs, lr, decay, momentum = 10, 0.5, 1e-3, 0.9
    probe = train_linear_probe(
        train, labels, 3, epochs=epochs, lr=lr, weight_decay=decay, momentum=momentum, batch_size=None, seed=7
    )

    init = torch.Generator().manual_seed(7)
    weight = torch.zeros(3, 6).normal_(0.0, 0.01, generator=init).double()  # drawn in float32, as nn.Linear
    bias = torch.zeros(3, dtype=torch.float64)
    mean, std = train.mean(0), (train.var(0, unbiased=False) + 1e-5).sqrt()

    def normalise(x):
        z = (x - mean) / std
        return z / z.norm(dim=1, keepdim=True)

    x, onehot = normalise(train), torch.nn.functional.one_hot(labels, 3).double()
    velocity_w, velocity_b = torch.zeros_like(weight), torch.zeros_like(bias)
    for epoch in range(epochs):
        rate = lr * 0.1 ** sum(epoch >= m for m in (6, 8))
        probs = torch.softmax(x @ weight.T + bias, dim=1)
        grad_w = (probs - onehot).T @ x / len(x) + decay * weight
        grad_b = (probs - onehot).sum(0) / len(x) + decay * bias
        velocity_w = momentum * velocity_w + grad_w if epoch else grad_w
        velocity_b = momentum * velocity_b + grad_b if epoch else grad_b
        weight, bias = weight - rate * velocity_w, bias - rate * velocity_b

    torch.testing.assert_close(probe.classifier.weight.detach(), weight, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        probe(test).detach(), normalise(test) @ weight.T + bias, rtol=1e-10, atol=1e-12
    )
