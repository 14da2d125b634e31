"""Run several protocols on one pair of (train, test) features and tabulate the results.

Result keys are stable, ``"<protocol>/<metric>"``: ``linear_probe/top1``, ``linear_probe/top5``, ``knn/top1``,
``retrieval/R@1`` ... ``retrieval/R@50``. Values are fractions in ``[0, 1]``; `format_results_table` shows
percentages, and `EvalResults.from_metrics` (``results.py``) turns them into the records model cards render.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .linear_probe import linear_probe
from .retrieval import knn_classify, retrieval_recall

PROTOCOLS = ("linear_probe", "knn", "retrieval")
_RUNNERS = {"linear_probe": linear_probe, "knn": knn_classify, "retrieval": retrieval_recall}


def _features_and_labels(split: Any, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Accept `VideoFeatures`, a ``(features, labels[, video_ids])`` tuple or a mapping with those keys."""
    if isinstance(split, Mapping):
        if "features" not in split:
            raise ValueError(f"{name} mapping needs a 'features' entry, got keys {sorted(split)}.")
        return split["features"], split.get("labels")
    if isinstance(split, (tuple, list)) and len(split) in (2, 3):
        return split[0], split[1]
    raise ValueError(
        f"{name} must be VideoFeatures, a (features, labels[, video_ids]) tuple or a mapping; "
        f"got {type(split).__name__}."
    )


def evaluate_features(
    train: Any,
    test: Any,
    protocols: Sequence[str] = PROTOCOLS,
    linear_probe_kwargs: Mapping[str, Any] | None = None,
    knn_kwargs: Mapping[str, Any] | None = None,
    retrieval_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Evaluate frozen features with several protocols.

    Args:
        train: train split: `VideoFeatures` (from `extract_features`), ``(features [N, D], labels [N])`` or a
            mapping with ``features`` and ``labels``.
        test: test split, same forms, ``[M, D]`` / ``[M]``.
        protocols: any of ``"linear_probe"``, ``"knn"``, ``"retrieval"``.
        linear_probe_kwargs, knn_kwargs, retrieval_kwargs: extra arguments for `linear_probe`,
            `knn_classify` and `retrieval_recall`.

    Returns:
        ``{"<protocol>/<metric>": value}``, e.g. ``{"linear_probe/top1": 0.61, "knn/top1": 0.42,
        "retrieval/R@1": 0.40, ...}``.
    """
    if isinstance(protocols, str):
        protocols = (protocols,)
    unknown = [p for p in protocols if p not in _RUNNERS]
    if unknown:
        raise ValueError(f"unknown protocol(s) {unknown}; choose from {list(PROTOCOLS)}.")
    if not protocols:
        raise ValueError(f"no protocol given; choose from {list(PROTOCOLS)}.")
    train_features, train_labels = _features_and_labels(train, "train")
    test_features, test_labels = _features_and_labels(test, "test")
    kwargs = {"linear_probe": linear_probe_kwargs, "knn": knn_kwargs, "retrieval": retrieval_kwargs}
    results: dict[str, float] = {}
    for protocol in protocols:
        metrics = _RUNNERS[protocol](
            train_features, train_labels, test_features, test_labels, **(kwargs[protocol] or {})
        )
        results.update({f"{protocol}/{metric}": value for metric, value in metrics.items()})
    return results


def format_results_table(
    results_by_model: Mapping[str, Mapping[str, float]], metrics: Sequence[str] | None = None, digits: int = 1
) -> str:
    """A markdown table comparing models, one row per model and one column per metric, in percent.

    Args:
        results_by_model: ``{"pretrained": evaluate_features(...), "random init": ...}``.
        metrics: columns to show, in order; defaults to every metric, in order of first appearance.
        digits: decimals of the percentages.

    Returns:
        The table as a string; a metric a model lacks shows as ``-``.
    """
    if not results_by_model:
        raise ValueError("results_by_model is empty: nothing to tabulate.")
    if metrics is None:
        metrics = list(dict.fromkeys(m for results in results_by_model.values() for m in results))
    lines = [
        "| model | " + " | ".join(metrics) + " |",
        "|---|" + "---:|" * len(metrics),
    ]
    for model_name, results in results_by_model.items():
        cells = [f"{100 * results[m]:.{digits}f}" if m in results else "-" for m in metrics]
        lines.append(f"| {model_name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
