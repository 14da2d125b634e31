"""Input checks and metric primitives shared by the evaluation protocols.

Everything here works on plain tensors: ``features`` are ``[V, D]`` (one row per video), ``labels`` are ``[V]``
integer class ids where ``-1`` marks an unlabelled video. Metrics are returned as fractions in ``[0, 1]``.
"""

from collections.abc import Sequence

import torch

UNLABELLED = -1


def check_features(features, split: str) -> torch.Tensor:
    """Validate a feature matrix and return it as a float32 tensor on its own device.

    Args:
        features: ``[V, D]`` tensor (or anything ``torch.as_tensor`` accepts), one row per video.
        split: name used in error messages (``"train"``, ``"test"``).

    Returns:
        ``[V, D]`` float32 tensor.
    """
    if features is None:
        raise ValueError(f"{split} features are missing (got None).")
    features = torch.as_tensor(features)
    if features.ndim != 2:
        raise ValueError(f"{split} features must have shape [num_videos, dim], got {tuple(features.shape)}.")
    if features.shape[0] == 0 or features.shape[1] == 0:
        raise ValueError(f"{split} features are empty (shape {tuple(features.shape)}): nothing to evaluate.")
    features = features.float()
    if not torch.isfinite(features).all():
        bad = int((~torch.isfinite(features)).any(dim=1).sum())
        raise ValueError(f"{split} features contain NaN or inf in {bad} of {features.shape[0]} rows.")
    return features


def check_labels(labels, num_videos: int, split: str, protocol: str) -> torch.Tensor:
    """Validate the labels a labelled protocol needs.

    Args:
        labels: ``[V]`` integer class ids; ``-1`` (or ``None`` for the whole split) means unlabelled.
        num_videos: ``V``, the number of feature rows the labels belong to.
        split: name used in error messages.
        protocol: the protocol asking, used in error messages.

    Returns:
        ``[V]`` int64 tensor.

    Raises:
        ValueError: labels missing, unlabelled entries, non-integer labels or a length mismatch.
    """
    if labels is None:
        raise ValueError(
            f"{protocol} evaluation needs labels, but the {split} split has none. "
            "Use a labelled source (class sub-folders, a label column) for evaluation."
        )
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{split} labels must be integer class ids, got dtype {labels.dtype}.")
    labels = labels.long().reshape(-1)
    if labels.numel() != num_videos:
        raise ValueError(f"{split} has {num_videos} feature rows but {labels.numel()} labels.")
    unlabelled = int((labels < 0).sum())
    if unlabelled:
        raise ValueError(
            f"{protocol} evaluation needs labels, but {unlabelled} of {num_videos} videos in the {split} split "
            f"are unlabelled (label {UNLABELLED}). Use a labelled source for evaluation."
        )
    return labels


def check_same_dim(train_features: torch.Tensor, test_features: torch.Tensor) -> None:
    """Raise unless train ``[N, D]`` and test ``[M, D]`` features share ``D``."""
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"train features have dim {train_features.shape[1]} but test features have dim "
            f"{test_features.shape[1]}; extract both with the same model."
        )


def class_indices(
    train_labels: torch.Tensor, test_labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Map arbitrary integer labels onto contiguous class indices defined by the train split.

    A test label that never occurs in train cannot be predicted; it maps to ``-1`` so that it always counts as
    an error instead of crashing or silently being dropped.

    Args:
        train_labels: ``[N]`` int64.
        test_labels: ``[M]`` int64.

    Returns:
        ``(classes [C], train_targets [N], test_targets [M])`` where ``classes`` are the sorted distinct train
        labels and targets index into it (``-1`` for unseen test classes).
    """
    classes = torch.unique(train_labels)
    train_targets = torch.searchsorted(classes, train_labels)
    position = torch.searchsorted(classes, test_labels).clamp(max=classes.numel() - 1)
    test_targets = torch.where(classes[position] == test_labels, position, torch.full_like(position, -1))
    return classes, train_targets, test_targets


def topk_accuracy(
    scores: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)
) -> dict[int, float]:
    """Fraction of rows whose target is among the ``k`` highest scores.

    Args:
        scores: ``[Q, C]`` class scores (logits, votes, ...).
        targets: ``[Q]`` class indices into ``C``; ``-1`` never matches.
        ks: the ``k`` values. A ``k`` above ``C`` is clipped to ``C`` (every class is then in the top k).

    Returns:
        ``{k: accuracy}`` with accuracies in ``[0, 1]``.
    """
    max_k = min(max(ks), scores.shape[1])
    top = scores.topk(max_k, dim=1).indices  # [Q, max_k]
    hits = top == targets[:, None]  # [Q, max_k]
    return {k: hits[:, : min(k, max_k)].any(dim=1).float().mean().item() for k in ks}


def recall_at_k(
    neighbour_labels: torch.Tensor, query_labels: torch.Tensor, ks: Sequence[int]
) -> dict[int, float]:
    """Retrieval Recall@k: fraction of queries with at least one same-class item among their first ``k`` results.

    Args:
        neighbour_labels: ``[Q, K]`` labels of each query's retrieved items, most similar first.
        query_labels: ``[Q]`` labels of the queries.
        ks: the ``k`` values; each is clipped to ``K``.

    Returns:
        ``{k: recall}`` with recalls in ``[0, 1]``.
    """
    hits = neighbour_labels == query_labels[:, None]  # [Q, K]
    # cumulative "any hit so far" along the ranking, so each k is one column lookup
    hit_by_rank = hits.int().cummax(dim=1).values.bool()
    last = neighbour_labels.shape[1] - 1
    return {k: hit_by_rank[:, min(k, last + 1) - 1].float().mean().item() for k in ks}
