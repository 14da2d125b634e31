"""Nearest-neighbour protocols on frozen video features: retrieval Recall@k and kNN classification.

Both follow the CoCLR recipe: one feature per video (clips averaged), centred, L2-normalised, cosine
similarity, test-split videos query the train split. Train and test are disjoint sets of videos, so no query is
ever its own neighbour.

Centring: by default both splits are centred by the **train** mean, so the test split's statistics never enter
the protocol. CoCLR's script centres each split by its own mean; ``center="per_split"`` reproduces that.
"""

import numbers
import warnings
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from .metrics import check_features, check_labels, check_same_dim, class_indices, recall_at_k

CenterMode = Literal["train", "per_split", "none"]
RETRIEVAL_KS = (1, 5, 10, 20, 50)


def center_and_normalize(
    train_features: torch.Tensor, test_features: torch.Tensor, center: CenterMode = "train"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre and L2-normalise train and test features so that a dot product is a cosine similarity.

    Centring matters for pooled ReLU features: they all share a large positive mean direction, which makes
    every uncentred cosine similarity close to 1 and the ranking dominated by noise.

    Args:
        train_features: ``[N, D]``.
        test_features: ``[M, D]``.
        center: ``"train"`` subtracts the train mean from both, ``"per_split"`` subtracts each split's own
            mean (CoCLR's script), ``"none"`` skips centring.

    Returns:
        ``(train [N, D], test [M, D])``, each row of unit L2 norm (an all-zero row stays zero).
    """
    if center == "train":
        mean = train_features.mean(dim=0, keepdim=True)
        train_features, test_features = train_features - mean, test_features - mean
    elif center == "per_split":
        train_features = train_features - train_features.mean(dim=0, keepdim=True)
        test_features = test_features - test_features.mean(dim=0, keepdim=True)
    elif center != "none":
        raise ValueError(f"center must be 'train', 'per_split' or 'none', got {center!r}.")
    return F.normalize(train_features, dim=1), F.normalize(test_features, dim=1)


def cosine_topk(
    queries: torch.Tensor, gallery: torch.Tensor, k: int, chunk_size: int = 4096
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` most similar gallery rows for every query, by dot product.

    Call it on L2-normalised rows to rank by cosine similarity. Queries are processed in chunks so that the
    ``[Q, G]`` similarity matrix never has to exist at once (Kinetics-sized galleries).

    Args:
        queries: ``[Q, D]``.
        gallery: ``[G, D]``.
        k: number of neighbours, ``1 <= k <= G``.
        chunk_size: queries per similarity block.

    Returns:
        ``(similarities [Q, k], indices [Q, k])``, most similar first.
    """
    if not 1 <= k <= gallery.shape[0]:
        raise ValueError(f"k must be between 1 and the gallery size {gallery.shape[0]}, got {k}.")
    values, indices = [], []
    for start in range(0, queries.shape[0], chunk_size):
        similarity = queries[start : start + chunk_size] @ gallery.T  # [chunk, G]
        top = similarity.topk(k, dim=1)
        values.append(top.values)
        indices.append(top.indices)
    return torch.cat(values), torch.cat(indices)


def _clip_ks(ks: Sequence[int], gallery_size: int, what: str) -> dict[int, int]:
    """Map each requested k to min(k, gallery_size), warning once about those clipped."""
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"{what} must be a positive integer, got {k!r}.")
    too_large = [k for k in ks if k > gallery_size]
    if too_large:
        warnings.warn(
            f"{what}={', '.join(map(str, too_large))} is larger than the train split ({gallery_size} videos); "
            f"using k={gallery_size} there.",
            stacklevel=3,
        )
    return {k: min(k, gallery_size) for k in ks}


def _prepare(train_features, train_labels, test_features, test_labels, protocol: str, center: CenterMode):
    train_features = check_features(train_features, "train")
    test_features = check_features(test_features, "test")
    check_same_dim(train_features, test_features)
    train_labels = check_labels(train_labels, train_features.shape[0], "train", protocol).to(
        train_features.device
    )
    test_labels = check_labels(test_labels, test_features.shape[0], "test", protocol).to(
        train_features.device
    )
    train_features, test_features = center_and_normalize(
        train_features, test_features.to(train_features), center
    )
    return train_features, train_labels, test_features, test_labels


def retrieval_recall(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    ks: Sequence[int] = RETRIEVAL_KS,
    center: CenterMode = "train",
    chunk_size: int = 4096,
) -> dict[str, float]:
    """Video retrieval Recall@k: test videos query train videos by cosine similarity.

    R@k is the fraction of test videos with at least one video of their class among their ``k`` nearest train
    videos. A ``k`` above the train size is clipped to it (with a warning): the top k is then the whole split.

    Args:
        train_features: ``[N, D]`` one feature per train video (clips averaged).
        train_labels: ``[N]`` class ids.
        test_features: ``[M, D]`` one feature per test video.
        test_labels: ``[M]`` class ids.
        ks: the ``k`` values to report.
        center: see `center_and_normalize`.
        chunk_size: queries per similarity block.

    Returns:
        ``{"R@k": recall}`` for every requested ``k`` (the requested value names the key), recalls in ``[0, 1]``.
    """
    if len(ks) == 0:
        raise ValueError("ks is empty: give at least one k for Recall@k.")
    train_features, train_labels, test_features, test_labels = _prepare(
        train_features, train_labels, test_features, test_labels, "retrieval", center
    )
    gallery_size = train_features.shape[0]
    clipped = _clip_ks(ks, gallery_size, "retrieval k")
    _, indices = cosine_topk(test_features, train_features, max(clipped.values()), chunk_size)
    recalls = recall_at_k(train_labels[indices], test_labels, list(clipped.values()))
    return {f"R@{k}": recalls[clipped[k]] for k in ks}


def knn_classify(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    weighting: Literal["exp", "uniform"] = "exp",
    center: CenterMode = "train",
    chunk_size: int = 4096,
) -> dict[str, float]:
    """Weighted k-nearest-neighbour classification with cosine similarity (InstDisc style).

    Each of a test video's ``k`` nearest train videos votes for its class with weight ``exp(s / temperature)``
    (``weighting="exp"``) or 1 (``"uniform"``), ``s`` being the cosine similarity; the class with the largest
    total wins (ties go to the smaller class id). ``k=1`` is the plain nearest-neighbour classifier. A ``k``
    above the train size is clipped to it (with a warning).

    Args:
        train_features: ``[N, D]``.
        train_labels: ``[N]`` class ids.
        test_features: ``[M, D]``.
        test_labels: ``[M]`` class ids; a class absent from train counts as an error.
        k: number of neighbours.
        temperature: vote temperature for ``weighting="exp"``.
        weighting: ``"exp"`` or ``"uniform"``.
        center: see `center_and_normalize`.
        chunk_size: queries per similarity block.

    Returns:
        ``{"top1": accuracy}`` in ``[0, 1]``.
    """
    if weighting not in ("exp", "uniform"):
        raise ValueError(f"weighting must be 'exp' or 'uniform', got {weighting!r}.")
    if weighting == "exp" and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    train_features, train_labels, test_features, test_labels = _prepare(
        train_features, train_labels, test_features, test_labels, "knn", center
    )
    k = _clip_ks([k], train_features.shape[0], "knn k")[k]
    classes, train_targets, test_targets = class_indices(train_labels, test_labels)
    similarities, indices = cosine_topk(test_features, train_features, k, chunk_size)  # [M, k]
    if weighting == "exp":
        # subtracting each row's best similarity leaves the argmax unchanged and keeps exp() finite
        weights = ((similarities - similarities[:, :1]) / temperature).exp()
    else:
        weights = torch.ones_like(similarities)
    votes = torch.zeros(test_features.shape[0], classes.numel(), device=weights.device)
    votes.scatter_add_(1, train_targets[indices], weights)  # [M, C]
    predictions = votes.argmax(dim=1)  # argmax returns the first maximum: ties go to the smaller class id
    return {"top1": (predictions == test_targets).float().mean().item()}
