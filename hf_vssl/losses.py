"""Contrastive loss primitives shared by the hf_vssl pretraining objectives.

Every function here is a pure function on tensors: no parameters, no state, no collectives. The models gather
what they need across processes first (see `distributed.py`) and pass the global candidate set in.

All losses are computed in at least float32 with autocast disabled: at a temperature of 0.07 the logits reach
about 14, where bfloat16 keeps fewer than two significant digits. Gradients flow back to the inputs' own dtype.

This module is imported by model code that is shipped with checkpoints (`trust_remote_code`), so it may only
import torch, transformers and sibling modules with single-dot relative imports.
"""

import math
from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F

__all__ = [
    "info_nce",
    "similarity_logits",
    "sinkhorn",
    "soft_target_contrast",
    "soft_target_cross_entropy",
    "swapped_prediction",
    "timestamp_alignment",
]


def _full_precision(tensor: torch.Tensor) -> torch.Tensor:
    """Upcast half-precision tensors to float32; float32 and float64 are left as they are."""
    if tensor.dtype in (torch.float16, torch.bfloat16):
        return tensor.float()
    return tensor


def _no_autocast(tensor: torch.Tensor) -> AbstractContextManager:
    """A context that switches autocast off on the tensor's device type, so matmuls run in the inputs' dtype."""
    return torch.autocast(device_type=tensor.device.type, enabled=False)


def _check_temperature(temperature: float, name: str = "temperature") -> None:
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"`{name}` must be a positive finite number, got {temperature!r}.")


def _check_shape(tensor: torch.Tensor, name: str, ndim: int, what: str) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(tensor).__name__}.")
    if tensor.ndim != ndim:
        raise ValueError(f"`{name}` must have shape {what}, got {tuple(tensor.shape)}.")


def _check_mask(mask: torch.Tensor, name: str, shape: tuple[int, ...]) -> None:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"`{name}` must be a boolean tensor, got {got}.")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"`{name}` must have shape {tuple(shape)}, got {tuple(mask.shape)}.")


def similarity_logits(
    anchors: torch.Tensor, candidates: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    r"""`<a_i, c_j> / temperature` for every pair, computed like the losses: in at least float32, autocast off.

    Use it for logits that a model builds itself (affinities, prototype scores) before they reach a loss or a
    threshold, so that mixed precision cannot round them.

    Args:
        anchors (`torch.Tensor` of shape `[N, D]`), candidates (`torch.Tensor` of shape `[M, D]`): embeddings
            (L2-normalised for cosine logits).
        temperature (`float`, defaults to 1.0): divides the dot products.

    Returns:
        `torch.Tensor` of shape `[N, M]`, differentiable, float32 (float64 for float64 inputs).
    """
    _check_shape(anchors, "anchors", 2, "[N, D]")
    _check_shape(candidates, "candidates", 2, "[M, D]")
    _check_temperature(temperature)
    with _no_autocast(anchors):
        return _full_precision(anchors) @ _full_precision(candidates).T / temperature


def info_nce(
    anchors: torch.Tensor,
    candidates: torch.Tensor,
    positive_mask: torch.Tensor,
    temperature: float = 0.07,
    ignore_mask: torch.Tensor | None = None,
    extra_negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Multi-positive InfoNCE with optional per-anchor extra negatives.

    With `s_ij = <a_i, c_j> / temperature`, negatives `Neg(i) = {j : not positive_ij and not ignore_ij}` and
    `e_ik = <a_i, x_ik> / temperature` for the extra negatives, every positive pair (i, p) contributes

        l_ip = -log( exp(s_ip) / (exp(s_ip) + sum_{j in Neg(i)} exp(s_ij) + sum_k exp(e_ik)) ),

    i.e. each positive is contrasted with the negatives only, never with the anchor's other positives. The loss
    averages `l_ip` over the positives of an anchor, then over the anchors. With one positive per anchor this is
    ordinary InfoNCE with the positive in the denominator.

    MLFO's instance contrast: anchors = clips A and B of the local videos, candidates = all gathered clips,
    `ignore_mask` = the anchor itself, `positive_mask` = the other clip of the same video. Its motion contrast adds
    the time-reversed versions of the anchor's own two clips as `extra_negatives`.

    Args:
        anchors (`torch.Tensor` of shape `[N, D]`): L2-normalised anchor embeddings.
        candidates (`torch.Tensor` of shape `[M, D]`): L2-normalised candidate embeddings (typically gathered).
        positive_mask (`torch.BoolTensor` of shape `[N, M]`): `True` where candidate j is a positive of anchor i.
            Every anchor needs at least one positive that is not ignored.
        temperature (`float`, defaults to 0.07): softmax temperature.
        ignore_mask (`torch.BoolTensor` of shape `[N, M]`, *optional*): pairs that are neither positive nor
            negative (e.g. the anchor itself). Ignoring wins over `positive_mask`.
        extra_negatives (`torch.Tensor` of shape `[N, K, D]`, *optional*): L2-normalised negatives that belong to
            one anchor only.

    Returns:
        `torch.Tensor`: scalar loss (float32, or float64 for float64 inputs).
    """
    _check_shape(anchors, "anchors", 2, "[N, D]")
    _check_shape(candidates, "candidates", 2, "[M, D]")
    num_anchors, dim = anchors.shape
    if num_anchors == 0 or candidates.shape[0] == 0:
        raise ValueError(
            f"`anchors` and `candidates` must be non-empty, got {tuple(anchors.shape)} and {tuple(candidates.shape)}."
        )
    if candidates.shape[1] != dim:
        raise ValueError(
            f"`anchors` and `candidates` must share the embedding size, got {dim} and {candidates.shape[1]}."
        )
    _check_mask(positive_mask, "positive_mask", (num_anchors, candidates.shape[0]))
    if ignore_mask is not None:
        _check_mask(ignore_mask, "ignore_mask", positive_mask.shape)
        positive_mask = positive_mask & ~ignore_mask
        negative_mask = ~(positive_mask | ignore_mask)
    else:
        negative_mask = ~positive_mask
    if extra_negatives is not None:
        _check_shape(extra_negatives, "extra_negatives", 3, "[N, K, D]")
        if extra_negatives.shape[0] != num_anchors or extra_negatives.shape[2] != dim:
            raise ValueError(
                f"`extra_negatives` must have shape [{num_anchors}, K, {dim}], got {tuple(extra_negatives.shape)}."
            )
    _check_temperature(temperature)
    num_positives = positive_mask.sum(dim=1)
    # A device-side check: no host sync on accelerators, an immediate error on CPU.
    torch._assert_async(
        (num_positives > 0).all(), "info_nce: every anchor needs at least one positive that is not ignored."
    )

    with _no_autocast(anchors):
        anchors = _full_precision(anchors)
        logits = similarity_logits(anchors, candidates, temperature)  # [N, M]
        negative_logits = logits.masked_fill(~negative_mask, float("-inf"))
        if extra_negatives is not None:
            extra_logits = torch.einsum("nd,nkd->nk", anchors, _full_precision(extra_negatives)) / temperature
            negative_logits = torch.cat([negative_logits, extra_logits], dim=1)
        # log of the summed negative exponentials, -inf for an anchor without negatives.
        negative_lse = torch.logsumexp(negative_logits, dim=1, keepdim=True)  # [N, 1]
        # -log(e^s / (e^s + e^lse)) for every pair; only positive pairs are kept.
        pair_losses = torch.logaddexp(logits, negative_lse) - logits
        pair_losses = pair_losses.masked_fill(~positive_mask, 0.0)
        per_anchor = pair_losses.sum(dim=1) / num_positives.clamp_min(1)
        return per_anchor.mean()


def soft_target_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, normalize_by_columns: bool = False
) -> torch.Tensor:
    r"""Cross-entropy of `softmax(logits)` against a soft target distribution per row.

        loss = mean_i ( -sum_j t_ij log softmax_j(logits_i) ) / (M if normalize_by_columns else 1)

    Targets are used as given (no normalisation and no stop-gradient); entries with `t_ij = 0` contribute
    nothing even where `logits_ij = -inf`. `normalize_by_columns=True` reproduces the MLFO code's graph loss,
    whose `.mean()` over all N x M entries divides the per-anchor cross-entropy by M.

    Args:
        logits (`torch.Tensor` of shape `[N, M]`): unnormalised scores (already divided by any temperature).
        targets (`torch.Tensor` of shape `[N, M]`): non-negative target weights, usually rows summing to 1.
        normalize_by_columns (`bool`, defaults to `False`): divide by the number of columns M.

    Returns:
        `torch.Tensor`: scalar loss.
    """
    _check_shape(logits, "logits", 2, "[N, M]")
    if not isinstance(targets, torch.Tensor) or tuple(targets.shape) != tuple(logits.shape):
        got = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise ValueError(f"`targets` must have the shape of `logits` {tuple(logits.shape)}, got {got}.")
    if logits.numel() == 0:
        raise ValueError(f"`logits` must be non-empty, got shape {tuple(logits.shape)}.")
    with _no_autocast(logits):
        targets = _full_precision(targets)
        log_probs = F.log_softmax(_full_precision(logits), dim=1)
        # 0 * log(0) is 0 here, not nan (masked-out logits of -inf with a zero target).
        log_probs = log_probs.masked_fill(torch.isneginf(log_probs) & (targets == 0), 0.0)
        loss = -(targets * log_probs).sum(dim=1).mean()
        if normalize_by_columns:
            loss = loss / logits.shape[1]
        return loss


@torch.no_grad()
def sinkhorn(
    scores: torch.Tensor,
    epsilon: float = 0.05,
    iterations: int = 3,
    row_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Sinkhorn-Knopp equipartition of N samples over K prototypes (SwAV), with uniform marginals.

    Starting from `Q = exp(scores / epsilon)`, each iteration scales the columns so that every prototype holds
    mass 1/K, then the rows so that every sample holds mass 1/N. The result is multiplied by N, so every row is a
    distribution over the prototypes (the codes). The iteration runs in the log domain, so any `scores / epsilon`
    is safe; in exact arithmetic it equals SwAV's `distributed_sinkhorn` on one process.

    Pass the scores of the whole global batch (and any score queue) at once: the marginals are over all rows.
    Leading dimensions are independent problems solved together (`[..., N, K]`: one set of kernels for all).

    Args:
        scores (`torch.Tensor` of shape `[N, K]` or `[..., N, K]`): prototype scores (e.g. cosine logits).
        epsilon (`float`, defaults to 0.05): entropic regularisation; smaller gives sharper codes.
        iterations (`int`, defaults to 3): number of (column, row) scaling rounds, at least 1.
        row_mask (`torch.BoolTensor` of shape `[N]`, *optional*): the rows that take part (at least one); the
            others are left out of both marginals and get all-zero codes. The codes of the kept rows equal those of
            `sinkhorn(scores[row_mask])`, without the host read that selecting the rows would need (e.g. a queue
            that is still filling).

    Returns:
        `torch.Tensor` of the shape of `scores`: codes, rows summing to 1, no gradient; float32 (float64 for
        float64).
    """
    if not isinstance(scores, torch.Tensor) or scores.ndim < 2:
        _check_shape(scores, "scores", 2, "[N, K]")
    _check_temperature(epsilon, "epsilon")
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"`iterations` must be a positive integer, got {iterations!r}.")
    num_samples, num_prototypes = scores.shape[-2:]
    if num_samples == 0 or num_prototypes == 0:
        raise ValueError(f"`scores` must be non-empty, got shape {tuple(scores.shape)}.")
    if row_mask is not None:
        _check_mask(row_mask, "row_mask", (num_samples,))
    with _no_autocast(scores):
        log_q = _full_precision(scores.detach()) / epsilon
        log_k, log_n = math.log(num_prototypes), math.log(num_samples)
        if row_mask is not None:
            # Left-out rows are -inf (no mass in the column sums); N counts the kept rows, in float64 like math.log.
            log_q = log_q.masked_fill(~row_mask[:, None], float("-inf"))
            log_n = row_mask.sum().to(torch.float64).log().to(log_q.dtype)
        for _ in range(iterations):
            log_q = log_q - torch.logsumexp(log_q, dim=-2, keepdim=True) - log_k
            row_lse = torch.logsumexp(log_q, dim=-1, keepdim=True)
            if row_mask is not None:  # -inf - (-inf) would be nan: left-out rows stay -inf
                row_lse = row_lse.masked_fill(~row_mask[:, None], 0.0)
            log_q = log_q - row_lse - log_n
        return torch.exp(log_q + log_n)


def swapped_prediction(
    logits_a: torch.Tensor,
    logits_b: torch.Tensor,
    codes_a: torch.Tensor,
    codes_b: torch.Tensor,
    temperature: float = 0.1,
) -> torch.Tensor:
    r"""SwAV swapped prediction: each view predicts the other view's code.

        loss = -1/2 mean_i ( sum_k q^b_ik log softmax_k(l^a_i / t) + sum_k q^a_ik log softmax_k(l^b_i / t) )

    The codes are targets: they are detached here.

    Args:
        logits_a, logits_b (`torch.Tensor` of shape `[N, K]`): prototype scores of views a and b.
        codes_a, codes_b (`torch.Tensor` of shape `[N, K]`): codes of views a and b (e.g. from `sinkhorn`).
        temperature (`float`, defaults to 0.1): softmax temperature of the predictions.

    Returns:
        `torch.Tensor`: scalar loss.
    """
    _check_temperature(temperature)
    _check_shape(logits_a, "logits_a", 2, "[N, K]")
    for name, tensor in (("logits_b", logits_b), ("codes_a", codes_a), ("codes_b", codes_b)):
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != tuple(logits_a.shape):
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(
                f"`{name}` must have the shape of `logits_a` {tuple(logits_a.shape)}, got {got}."
            )
    loss_a = soft_target_cross_entropy(logits_a / temperature, codes_b.detach())
    loss_b = soft_target_cross_entropy(logits_b / temperature, codes_a.detach())
    return 0.5 * (loss_a + loss_b)


def timestamp_alignment(
    local_seq: torch.Tensor,
    global_seq: torch.Tensor,
    temperature: float = 0.07,
    slots: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Two-way time-step matching between a local and a global sequence of the same video.

    Each time step of both sequences is L2-normalised over D. Per video i, `M_i[m, n] = <s_im, g_in> / t`. Local
    step m must pick its slot `c_im` among the video's T global steps, and every global step n that is the slot of
    at least one local step must pick those local steps among the video's M local steps (a soft target spread
    evenly over them):

        loss = 1/2 ( mean_{i,m} CE(M_i[m, :], c_im) + mean_i mean_{n claimed in i} CE(M_i[:, n], uniform{m : c_im = n}) )

    Without `slots`, `c_im = m` and M = T (MLFO: local step m is global step m, every global step is claimed once,
    and the second part is an ordinary CE with target n). With `slots`, several local steps may share a slot and a
    global step may be nobody's slot (ctrlaug: local clips placed inside a longer global view). Candidates come
    from the same video only (no cross-video negatives).

    Args:
        local_seq (`torch.Tensor` of shape `[N, M, D]`): local sequence per video (e.g. clips A and B pooled to
            T/2 steps each, concatenated in time; or the steps of several local clips side by side).
        global_seq (`torch.Tensor` of shape `[N, T, D]`): global sequence per video.
        temperature (`float`, defaults to 0.07): softmax temperature.
        slots (`torch.LongTensor` of shape `[N, M]`, *optional*): the global step each local step belongs to, in
            `[0, T)`. Defaults to `arange(T)` per video, which needs M = T.

    Returns:
        `torch.Tensor`: scalar loss.
    """
    _check_shape(local_seq, "local_seq", 3, "[N, M, D]")
    _check_shape(global_seq, "global_seq", 3, "[N, T, D]")
    num_videos, num_local, dim = local_seq.shape
    num_steps = global_seq.shape[1]
    if slots is None:
        if local_seq.shape != global_seq.shape:
            raise ValueError(
                f"`local_seq` and `global_seq` must have the same shape [N, T, D] without `slots`, got "
                f"{tuple(local_seq.shape)} and {tuple(global_seq.shape)}."
            )
    else:
        if global_seq.shape[0] != num_videos or global_seq.shape[2] != dim:
            raise ValueError(
                f"`global_seq` must have shape [{num_videos}, T, {dim}] like `local_seq`, got "
                f"{tuple(global_seq.shape)}."
            )
        if not isinstance(slots, torch.Tensor) or tuple(slots.shape) != (num_videos, num_local):
            got = tuple(slots.shape) if isinstance(slots, torch.Tensor) else type(slots).__name__
            raise ValueError(f"`slots` must have shape [{num_videos}, {num_local}], got {got}.")
        if slots.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"`slots` must be an integer tensor, got {slots.dtype}.")
    _check_temperature(temperature)
    if local_seq.numel() == 0 or global_seq.numel() == 0:
        raise ValueError(
            f"`local_seq` and `global_seq` must be non-empty, got shapes {tuple(local_seq.shape)} and "
            f"{tuple(global_seq.shape)}."
        )
    if slots is None:
        slots = torch.arange(num_steps, device=local_seq.device).expand(num_videos, num_steps)
    slots = slots.long()
    torch._assert_async(
        ((slots >= 0) & (slots < num_steps)).all(), "timestamp_alignment: `slots` must lie in [0, T)."
    )
    with _no_autocast(local_seq):
        local_seq = F.normalize(_full_precision(local_seq), dim=-1)
        global_seq = F.normalize(_full_precision(global_seq), dim=-1)
        logits = torch.einsum("nmd,nkd->nmk", local_seq, global_seq) / temperature  # [N, M, T]
        local_to_global = F.cross_entropy(logits.reshape(-1, num_steps), slots.reshape(-1))
        # Column n of video i: a distribution over the local steps whose slot is n; unclaimed columns drop out.
        claims = F.one_hot(slots, num_steps).to(logits.dtype).transpose(1, 2)  # [N, T, M]
        counts = claims.sum(dim=-1)  # [N, T]
        claimed = counts > 0
        targets = claims / counts.clamp_min(1)[..., None]
        log_probs = F.log_softmax(logits.transpose(1, 2), dim=-1)  # [N, T, M]
        per_column = -(targets * log_probs).sum(dim=-1)  # 0 for unclaimed columns
        # Mean over a video's claimed columns, then over videos: every video weighs the same, so a batch split
        # across processes averages to the loss of the whole batch.
        per_video = per_column.sum(dim=1) / claimed.sum(dim=1)
        global_to_local = per_video.mean()
        return 0.5 * (local_to_global + global_to_local)


def soft_target_contrast(
    anchors: torch.Tensor, candidates: torch.Tensor, targets: torch.Tensor, temperature: float = 0.07
) -> torch.Tensor:
    r"""Contrast with a soft target: cross-entropy of `softmax_j(<a_i, c_j> / temperature)` against `t_ij`.

        loss = mean_i ( -sum_j t_ij log softmax_j(<a_i, c_j> / temperature) )

    ctrlaug's soft region contrast: anchors are a batch's local clips, candidates the region features of every
    clip of every video, `t_ij` the anchor clip's 3-D tube IoU with clip j of the same video (0 for other videos),
    normalised per row. The symmetric form is a second call with anchors and candidates exchanged.

    Args:
        anchors (`torch.Tensor` of shape `[N, D]`): L2-normalised anchor embeddings.
        candidates (`torch.Tensor` of shape `[M, D]`): L2-normalised candidate embeddings (typically gathered).
        targets (`torch.Tensor` of shape `[N, M]`): non-negative target weights, rows summing to 1.
        temperature (`float`, defaults to 0.07): softmax temperature.

    Returns:
        `torch.Tensor`: scalar loss (float32, or float64 for float64 inputs).
    """
    return soft_target_cross_entropy(similarity_logits(anchors, candidates, temperature), targets)
