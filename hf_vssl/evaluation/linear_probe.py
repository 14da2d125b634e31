"""Linear probe on frozen video features (CoCLR style).

The classifier is ``Linear(L2Normalize(Standardize(x)))``: the standardisation is an affine-free BatchNorm whose
statistics are fixed to those of the train features, then each feature is L2-normalised, then a linear layer
is trained with SGD (momentum 0.9, weight decay 1e-3, learning rate divided by 10 at 60% and 80% of the
epochs), as in CoCLR's ``feature_linear_probe.py``. Unlike that script, the reported accuracy is the one of the
final epoch: picking the best epoch on the test split would select the model on test data.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .metrics import check_features, check_labels, check_same_dim, class_indices, topk_accuracy


class LinearProbeClassifier(nn.Module):
    """Feature standardisation (fixed train statistics) + L2 normalisation + linear layer.

    Args:
        mean: ``[D]`` per-dimension mean of the train features.
        std: ``[D]`` per-dimension standard deviation of the train features (``sqrt(var + eps)``).
        num_classes: number of output classes ``C``.
        init_std: standard deviation of the normal initialisation of the linear weights (CoCLR: 0.01).
        generator: random generator for the initialisation.

    Forward: ``features [B, D]`` -> ``logits [B, C]``.
    """

    def __init__(
        self,
        mean: torch.Tensor,
        std: torch.Tensor,
        num_classes: int,
        init_std: float = 0.01,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("std", std.detach().clone())
        self.classifier = nn.Linear(mean.numel(), num_classes)
        with torch.no_grad():
            self.classifier.weight.normal_(0.0, init_std, generator=generator)
            self.classifier.bias.zero_()

    @classmethod
    def from_train_features(
        cls, train_features: torch.Tensor, num_classes: int, eps: float = 1e-5, **kwargs
    ) -> "LinearProbeClassifier":
        """Build a probe whose standardisation uses the statistics of ``train_features [N, D]``."""
        mean = train_features.mean(dim=0)
        std = (train_features.var(dim=0, unbiased=False) + eps).sqrt()  # BatchNorm's biased variance
        return cls(mean, std, num_classes, **kwargs)

    def normalize(self, features: torch.Tensor) -> torch.Tensor:
        """``[B, D]`` -> standardised and L2-normalised ``[B, D]``."""
        return F.normalize((features - self.mean) / self.std, dim=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.normalize(features))


def train_linear_probe(
    train_features: torch.Tensor,
    train_targets: torch.Tensor,
    num_classes: int,
    epochs: int = 100,
    lr: float = 1.0,
    weight_decay: float = 1e-3,
    momentum: float = 0.9,
    batch_size: int | None = 1024,
    milestones: Sequence[float] = (0.6, 0.8),
    seed: int = 0,
) -> LinearProbeClassifier:
    """Train a `LinearProbeClassifier` on frozen features with SGD and a step schedule.

    Args:
        train_features: ``[N, D]`` float features.
        train_targets: ``[N]`` class indices in ``[0, num_classes)``.
        num_classes: ``C``.
        epochs: passes over the train features.
        lr: initial learning rate (CoCLR's feature probe: 1.0; tune in 0.1-1).
        weight_decay: SGD weight decay on the linear layer.
        momentum: SGD momentum.
        batch_size: mini-batch size; ``None`` (or a size >= N) trains full-batch.
        milestones: fractions of ``epochs`` after which the learning rate is divided by 10.
        seed: seeds the initialisation and the shuffling; the same seed gives the same probe.

    Returns:
        The trained probe, in eval mode.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}.")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}.")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    probe = LinearProbeClassifier.from_train_features(train_features, num_classes, generator=generator)
    probe = probe.to(train_features.device, train_features.dtype)  # float64 features train a float64 probe
    optimizer = torch.optim.SGD(probe.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    # the schedule steps once per epoch, so milestones are epoch indices
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=sorted({round(f * epochs) for f in milestones}), gamma=0.1
    )
    num_train = train_features.shape[0]
    batch_size = num_train if batch_size is None else min(batch_size, num_train)
    # standardisation and normalisation are fixed, so do them once instead of every step
    with torch.no_grad():
        normalized = probe.normalize(train_features)
    probe.train()
    with torch.enable_grad():  # callers often evaluate under no_grad
        for _ in range(epochs):
            order = torch.randperm(num_train, generator=generator).to(train_features.device)
            for start in range(0, num_train, batch_size):
                batch = order[start : start + batch_size]
                loss = F.cross_entropy(probe.classifier(normalized[batch]), train_targets[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            scheduler.step()
    return probe.eval()


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    epochs: int = 100,
    lr: float = 1.0,
    weight_decay: float = 1e-3,
    momentum: float = 0.9,
    batch_size: int | None = 1024,
    milestones: Sequence[float] = (0.6, 0.8),
    seed: int = 0,
) -> dict[str, float]:
    """Train a linear probe on train features and report its test accuracy.

    Classes are the distinct train labels (labels need not be contiguous); a test video whose class never
    occurs in train counts as an error. With fewer than 5 classes, top-5 is clipped to the number of classes
    (and is then 1.0).

    Args:
        train_features: ``[N, D]`` one feature per train video.
        train_labels: ``[N]`` class ids.
        test_features: ``[M, D]`` one feature per test video.
        test_labels: ``[M]`` class ids.
        epochs, lr, weight_decay, momentum, batch_size, milestones, seed: see `train_linear_probe`.

    Returns:
        ``{"top1": ..., "top5": ...}``, accuracies in ``[0, 1]``.
    """
    train_features = check_features(train_features, "train")
    test_features = check_features(test_features, "test")
    check_same_dim(train_features, test_features)
    device = train_features.device
    train_labels = check_labels(train_labels, train_features.shape[0], "train", "linear_probe").to(device)
    test_labels = check_labels(test_labels, test_features.shape[0], "test", "linear_probe").to(device)
    classes, train_targets, test_targets = class_indices(train_labels, test_labels)
    probe = train_linear_probe(
        train_features,
        train_targets,
        num_classes=classes.numel(),
        epochs=epochs,
        lr=lr,
        weight_decay=weight_decay,
        momentum=momentum,
        batch_size=batch_size,
        milestones=milestones,
        seed=seed,
    )
    with torch.no_grad():
        logits = probe(test_features.to(device))
    accuracy = topk_accuracy(logits, test_targets, ks=(1, 5))
    return {"top1": accuracy[1], "top5": accuracy[5]}
