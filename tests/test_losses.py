"""Every loss in hf_vssl.losses against a slow reference written straight from its equation (float64, loops)."""

import math

import pytest
import torch
import torch.nn.functional as F

from hf_vssl.losses import (
    info_nce,
    sinkhorn,
    soft_target_contrast,
    soft_target_cross_entropy,
    swapped_prediction,
    timestamp_alignment,
)


def _unit(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)


def _leaf(tensor):
    return tensor.detach().clone().requires_grad_(True)


def _assert_value_and_grad(loss_fn, reference_fn, inputs, atol=1e-10):
    """Compare loss values and the gradients with respect to every input."""
    fast_inputs = [_leaf(x) for x in inputs]
    slow_inputs = [_leaf(x) for x in inputs]
    fast = loss_fn(*fast_inputs)
    slow = reference_fn(*slow_inputs)
    torch.testing.assert_close(fast, slow, atol=atol, rtol=1e-9)
    fast_grads = torch.autograd.grad(fast, fast_inputs, allow_unused=True)
    slow_grads = torch.autograd.grad(slow, slow_inputs, allow_unused=True)
    for index, (fast_grad, slow_grad) in enumerate(zip(fast_grads, slow_grads)):
        assert (fast_grad is None) == (slow_grad is None), f"input {index}: gradient presence differs"
        if fast_grad is not None:
            torch.testing.assert_close(
                fast_grad, slow_grad, atol=atol, rtol=1e-9, msg=f"gradient of input {index}"
            )
    return fast


# ----------------------------------------------------------------------------------------------- info_nce


def _info_nce_reference(anchors, candidates, positive, temperature, ignore=None, extra=None):
    """l_ip = -log(e^s_ip / (e^s_ip + sum_neg e^s_in + sum_k e^e_ik)); mean over positives, then anchors."""
    per_anchor = []
    for i in range(anchors.shape[0]):
        negatives = []
        for j in range(candidates.shape[0]):
            ignored = ignore is not None and bool(ignore[i, j])
            if not ignored and not bool(positive[i, j]):
                negatives.append(torch.exp(torch.dot(anchors[i], candidates[j]) / temperature))
        if extra is not None:
            for k in range(extra.shape[1]):
                negatives.append(torch.exp(torch.dot(anchors[i], extra[i, k]) / temperature))
        negative_sum = sum(negatives) if negatives else anchors.new_zeros(())
        terms = []
        for p in range(candidates.shape[0]):
            if bool(positive[i, p]) and not (ignore is not None and bool(ignore[i, p])):
                pos = torch.exp(torch.dot(anchors[i], candidates[p]) / temperature)
                terms.append(-torch.log(pos / (pos + negative_sum)))
        per_anchor.append(sum(terms) / len(terms))
    return sum(per_anchor) / len(per_anchor)


def _mlfo_instance_reference(z, temperature, reversed_z=None):
    """MLFO L1 (and L2 with reversed clips) written per METHODS.md: z is [N videos, 2 clips, D]."""
    num_videos = z.shape[0]
    losses = []
    for i in range(num_videos):
        for a in range(2):
            anchor = z[i, a]
            positive = torch.exp(torch.dot(anchor, z[i, 1 - a]) / temperature)
            denominator = positive
            for j in range(num_videos):
                if j == i:
                    continue
                for c in range(2):
                    denominator = denominator + torch.exp(torch.dot(anchor, z[j, c]) / temperature)
            if reversed_z is not None:
                for c in range(2):
                    denominator = denominator + torch.exp(torch.dot(anchor, reversed_z[i, c]) / temperature)
            losses.append(-torch.log(positive / denominator))
    return sum(losses) / len(losses)


def _mlfo_masks(num_videos):
    index = torch.arange(2 * num_videos)
    positive = index[:, None] == (index ^ 1)[None, :]  # clip A <-> clip B of the same video
    ignore = index[:, None] == index[None, :]
    return positive, ignore


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_info_nce_is_mlfo_instance_contrast(temperature):
    num_videos, dim = 5, 8
    z = _unit(num_videos, 2, dim, seed=1)
    positive, ignore = _mlfo_masks(num_videos)

    def fast(z):
        flat = z.reshape(-1, dim)
        return info_nce(flat, flat, positive, temperature, ignore_mask=ignore)

    _assert_value_and_grad(fast, lambda z: _mlfo_instance_reference(z, temperature), [z])


def test_info_nce_is_mlfo_motion_contrast_with_reversed_clips():
    num_videos, dim, temperature = 4, 6, 0.07
    z, reversed_z = _unit(num_videos, 2, dim, seed=2), _unit(num_videos, 2, dim, seed=3)
    positive, ignore = _mlfo_masks(num_videos)

    def fast(z, reversed_z):
        flat = z.reshape(-1, dim)
        # Both reversed clips of the anchor's own video, for each of its two clips.
        extra = reversed_z.repeat_interleave(2, dim=0)  # [2N, 2, D]
        return info_nce(flat, flat, positive, temperature, ignore_mask=ignore, extra_negatives=extra)

    _assert_value_and_grad(fast, lambda z, r: _mlfo_instance_reference(z, temperature, r), [z, reversed_z])


def test_info_nce_multi_positive_with_ignore_and_extra_negatives():
    num_anchors, num_candidates, num_extra, dim, temperature = 6, 9, 3, 5, 0.2
    generator = torch.Generator().manual_seed(4)
    positive = torch.rand(num_anchors, num_candidates, generator=generator) < 0.3
    positive[torch.arange(num_anchors), torch.arange(num_anchors)] = True  # at least one positive each
    ignore = torch.rand(num_anchors, num_candidates, generator=generator) < 0.2
    ignore[torch.arange(num_anchors), torch.arange(num_anchors)] = False
    ignore[0, 1] = positive[0, 1] = True  # ignoring wins over positive
    anchors, candidates = _unit(num_anchors, dim, seed=5), _unit(num_candidates, dim, seed=6)
    extra = _unit(num_anchors, num_extra, dim, seed=7)
    assert (positive.sum(1) > 1).any(), "the case must contain anchors with several positives"

    _assert_value_and_grad(
        lambda a, c, e: info_nce(a, c, positive, temperature, ignore_mask=ignore, extra_negatives=e),
        lambda a, c, e: _info_nce_reference(a, c, positive, temperature, ignore, e),
        [anchors, candidates, extra],
    )


def test_info_nce_anchor_without_negatives_is_finite():
    anchors, candidates = _unit(2, 4, seed=8), _unit(2, 4, seed=9)
    positive = torch.tensor([[True, True], [True, False]])  # anchor 0 has no negative: its loss is 0
    _assert_value_and_grad(
        lambda a, c: info_nce(a, c, positive, 0.1),
        lambda a, c: _info_nce_reference(a, c, positive, 0.1),
        [anchors, candidates],
    )


def test_info_nce_is_stable_at_low_temperature():
    anchors, candidates = _unit(4, 8, seed=10).float(), _unit(6, 8, seed=11).float()
    positive = torch.eye(4, 6, dtype=torch.bool)
    anchors.requires_grad_(True)
    loss = info_nce(anchors, candidates, positive, temperature=1e-3)  # logits up to 1000
    (grad,) = torch.autograd.grad(loss, anchors)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    expected = info_nce(anchors.double(), candidates.double(), positive, temperature=1e-3)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-4, atol=1e-4)


def test_info_nce_bfloat16_under_autocast_is_computed_in_float32():
    anchors, candidates = _unit(8, 16, seed=12).float(), _unit(8, 16, seed=13).float()
    positive = torch.eye(8, dtype=torch.bool)
    expected = info_nce(anchors, candidates, positive)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = info_nce(anchors, candidates, positive)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected)


def test_info_nce_rejects_bad_input():
    anchors, candidates = _unit(3, 4, seed=14), _unit(5, 4, seed=15)
    positive = torch.zeros(3, 5, dtype=torch.bool)
    positive[:, 0] = True
    with pytest.raises(RuntimeError, match="at least one positive"):
        info_nce(anchors, candidates, torch.zeros(3, 5, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="at least one positive"):  # the only positive is ignored
        info_nce(anchors, candidates, positive, ignore_mask=positive)
    with pytest.raises(TypeError, match="positive_mask"):
        info_nce(anchors, candidates, positive.float())
    with pytest.raises(ValueError, match="positive_mask"):
        info_nce(anchors, candidates, positive[:, :4])
    with pytest.raises(ValueError, match="embedding size"):
        info_nce(anchors, candidates[:, :3], positive)
    with pytest.raises(ValueError, match="extra_negatives"):
        info_nce(anchors, candidates, positive, extra_negatives=_unit(2, 2, 4))
    with pytest.raises(ValueError, match="temperature"):
        info_nce(anchors, candidates, positive, temperature=0.0)
    with pytest.raises(ValueError, match="non-empty"):
        info_nce(anchors[:0], candidates, positive[:0])


# ------------------------------------------------------------------------------ soft_target_cross_entropy


def _soft_ce_reference(logits, targets, normalize_by_columns=False):
    rows = []
    for i in range(logits.shape[0]):
        log_norm = torch.log(sum(torch.exp(logits[i, j]) for j in range(logits.shape[1])))
        rows.append(-sum(targets[i, j] * (logits[i, j] - log_norm) for j in range(logits.shape[1])))
    loss = sum(rows) / len(rows)
    return loss / logits.shape[1] if normalize_by_columns else loss


@pytest.mark.parametrize("normalize_by_columns", [False, True])
def test_soft_target_cross_entropy(normalize_by_columns):
    generator = torch.Generator().manual_seed(20)
    logits = torch.randn(5, 7, generator=generator, dtype=torch.float64) * 3
    targets = torch.rand(5, 7, generator=generator, dtype=torch.float64)
    targets[targets < 0.4] = 0
    targets[:, 0] += 0.1
    targets = targets / targets.sum(1, keepdim=True)
    _assert_value_and_grad(
        lambda x, t: soft_target_cross_entropy(x, t, normalize_by_columns),
        lambda x, t: _soft_ce_reference(x, t, normalize_by_columns),
        [logits, targets],
    )


def test_soft_target_cross_entropy_is_mlfo_graph_loss():
    """METHODS §1 loss 5: (1/N) mean_i sum_j -G_ij log softmax_j(<r_i^A, r_j^B>/tau), G row-normalised."""
    num_videos, dim, temperature = 6, 5, 0.07
    r_a, r_b = _unit(num_videos, dim, seed=21), _unit(num_videos, dim, seed=22)
    graph = (torch.rand(num_videos, num_videos, generator=torch.Generator().manual_seed(23)) > 0.6).double()
    graph = graph + torch.eye(num_videos, dtype=torch.float64)
    graph = graph / graph.sum(1, keepdim=True)

    def reference(r_a, r_b):
        total = 0
        for i in range(num_videos):
            exps = [torch.exp(torch.dot(r_a[i], r_b[j]) / temperature) for j in range(num_videos)]
            for j in range(num_videos):
                total = total - graph[i, j] * torch.log(exps[j] / sum(exps))
        return total / (num_videos * num_videos)  # the code's .mean() over all N x N entries

    _assert_value_and_grad(
        lambda a, b: soft_target_cross_entropy(a @ b.T / temperature, graph, normalize_by_columns=True),
        reference,
        [r_a, r_b],
    )


def test_soft_target_cross_entropy_ignores_masked_logits_with_zero_target():
    logits = torch.tensor([[0.5, float("-inf"), 1.0]], dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[0.25, 0.0, 0.75]], dtype=torch.float64)
    loss = soft_target_cross_entropy(logits, targets)
    (grad,) = torch.autograd.grad(loss, logits)
    finite = torch.tensor([[0.5, 1.0]], dtype=torch.float64)
    expected = _soft_ce_reference(finite, targets[:, [0, 2]])
    torch.testing.assert_close(loss, expected)
    assert torch.isfinite(grad).all() and grad[0, 1] == 0


def test_soft_target_cross_entropy_rejects_bad_shapes():
    with pytest.raises(ValueError, match="targets"):
        soft_target_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="logits"):
        soft_target_cross_entropy(torch.zeros(6), torch.zeros(6))


# --------------------------------------------------------------------------------------------- sinkhorn


def _sinkhorn_reference(scores, epsilon, iterations):
    """SwAV's algorithm as published, on Q = exp(scores / eps)^T of shape [K, B]."""
    q = torch.exp(scores / epsilon).T.clone()
    num_prototypes, num_samples = q.shape
    q = q / q.sum()
    for _ in range(iterations):
        for k in range(num_prototypes):  # every prototype receives mass 1/K
            q[k, :] = q[k, :] / q[k, :].sum() / num_prototypes
        for b in range(num_samples):  # every sample carries mass 1/B
            q[:, b] = q[:, b] / q[:, b].sum() / num_samples
    return (q * num_samples).T


@pytest.mark.parametrize("iterations", [1, 3, 10])
def test_sinkhorn_matches_swav(iterations):
    scores = F.normalize(
        torch.randn(12, 5, generator=torch.Generator().manual_seed(30), dtype=torch.float64), dim=1
    )
    codes = sinkhorn(scores, epsilon=0.05, iterations=iterations)
    torch.testing.assert_close(codes, _sinkhorn_reference(scores, 0.05, iterations), atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(codes.sum(1), torch.ones(12, dtype=torch.float64))


def test_sinkhorn_equipartitions_and_has_no_gradient():
    scores = torch.randn(40, 4, generator=torch.Generator().manual_seed(31), requires_grad=True)
    codes = sinkhorn(scores, epsilon=0.5, iterations=200)
    assert not codes.requires_grad
    torch.testing.assert_close(codes.sum(0), torch.full((4,), 10.0), atol=1e-3, rtol=0)
    torch.testing.assert_close(codes.sum(1), torch.ones(40))


def test_sinkhorn_is_stable_for_large_scores():
    scores = (
        torch.randn(16, 8, generator=torch.Generator().manual_seed(32)) * 1000
    )  # exp(scores/eps) overflows
    codes = sinkhorn(scores, epsilon=0.05, iterations=3)
    assert torch.isfinite(codes).all()
    torch.testing.assert_close(codes.sum(1), torch.ones(16))


def test_sinkhorn_rejects_bad_arguments():
    with pytest.raises(ValueError, match="iterations"):
        sinkhorn(torch.randn(4, 3), iterations=0)
    with pytest.raises(ValueError, match="epsilon"):
        sinkhorn(torch.randn(4, 3), epsilon=-1.0)
    with pytest.raises(ValueError, match="scores"):
        sinkhorn(torch.randn(4))


# ------------------------------------------------------------------------------------ swapped_prediction


def test_swapped_prediction():
    generator = torch.Generator().manual_seed(40)
    logits_a = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    logits_b = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    codes_a, codes_b = sinkhorn(logits_a), sinkhorn(logits_b)
    temperature = 0.1

    def reference(logits_a, logits_b):
        total = 0
        for i in range(6):
            exp_a = [torch.exp(logits_a[i, k] / temperature) for k in range(5)]
            exp_b = [torch.exp(logits_b[i, k] / temperature) for k in range(5)]
            log_p_a = [torch.log(exp_a[k] / sum(exp_a)) for k in range(5)]
            log_p_b = [torch.log(exp_b[k] / sum(exp_b)) for k in range(5)]
            total = total - 0.5 * sum(
                codes_b[i, k] * log_p_a[k] + codes_a[i, k] * log_p_b[k] for k in range(5)
            )
        return total / 6

    _assert_value_and_grad(
        lambda a, b: swapped_prediction(a, b, codes_a, codes_b, temperature), reference, [logits_a, logits_b]
    )


def test_swapped_prediction_does_not_backpropagate_into_codes():
    logits_a, logits_b = torch.randn(3, 4), torch.randn(3, 4)
    codes_a = torch.softmax(torch.randn(3, 4), 1).requires_grad_(True)
    codes_b = torch.softmax(torch.randn(3, 4), 1).requires_grad_(True)
    loss = swapped_prediction(logits_a, logits_b, codes_a, codes_b)
    assert not loss.requires_grad
    with pytest.raises(ValueError, match="codes_b"):
        swapped_prediction(logits_a, logits_b, codes_a, codes_b[:, :3])


# ---------------------------------------------------------------------------------- timestamp_alignment


def _timestamp_reference(local_seq, global_seq, temperature):
    num_videos, steps, _ = local_seq.shape
    rows, columns = [], []
    for i in range(num_videos):
        s = [local_seq[i, m] / torch.linalg.vector_norm(local_seq[i, m]) for m in range(steps)]
        g = [global_seq[i, n] / torch.linalg.vector_norm(global_seq[i, n]) for n in range(steps)]
        sim = [[torch.dot(s[m], g[n]) / temperature for n in range(steps)] for m in range(steps)]
        for m in range(steps):  # local step m must find global step m
            rows.append(-sim[m][m] + torch.log(sum(torch.exp(sim[m][n]) for n in range(steps))))
        for n in range(steps):  # global step n must find local step n
            columns.append(-sim[n][n] + torch.log(sum(torch.exp(sim[m][n]) for m in range(steps))))
    return 0.5 * (sum(rows) / len(rows) + sum(columns) / len(columns))


@pytest.mark.parametrize("steps", [2, 4, 8])
def test_timestamp_alignment(steps):
    generator = torch.Generator().manual_seed(50 + steps)
    local_seq = torch.randn(
        3, steps, 6, generator=generator, dtype=torch.float64
    )  # not normalised on purpose
    global_seq = torch.randn(3, steps, 6, generator=generator, dtype=torch.float64)
    _assert_value_and_grad(
        lambda s, g: timestamp_alignment(s, g, 0.07),
        lambda s, g: _timestamp_reference(s, g, 0.07),
        [local_seq, global_seq],
    )


def test_timestamp_alignment_uses_same_video_candidates_only():
    # Another video's steps are identical to this video's targets: they must not change the loss.
    local_seq = torch.randn(1, 4, 8, dtype=torch.float64)
    global_seq = torch.randn(1, 4, 8, dtype=torch.float64)
    alone = timestamp_alignment(local_seq, global_seq)
    both = timestamp_alignment(torch.cat([local_seq, global_seq]), torch.cat([global_seq, local_seq]))
    torch.testing.assert_close(both, alone)
    perfect = timestamp_alignment(global_seq, global_seq, temperature=1e-3)
    assert perfect < 1e-6 and math.isfinite(perfect.item())


def test_timestamp_alignment_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        timestamp_alignment(torch.randn(2, 4, 8), torch.randn(2, 2, 8))
    with pytest.raises(ValueError, match="local_seq"):
        timestamp_alignment(torch.randn(4, 8), torch.randn(4, 8))


# --- timestamp alignment with slots (ctrlaug's order term) and the soft-target contrast ----------------------------


def _slotted_reference(local_seq, global_seq, slots, temperature):
    """Explicit loops: each local step picks its slot; each claimed global step its local steps (uniform target),
    averaged over the video's claimed steps, then over videos."""
    rows, videos = [], []
    for i in range(local_seq.shape[0]):
        s = [x / x.norm() for x in local_seq[i]]
        g = [x / x.norm() for x in global_seq[i]]
        scores = torch.stack([torch.stack([torch.dot(a, b) / temperature for b in g]) for a in s])
        for m, slot in enumerate(slots[i].tolist()):
            rows.append(-torch.log_softmax(scores[m], dim=0)[slot])
        columns = []
        for n in range(len(g)):
            mine = [m for m, slot in enumerate(slots[i].tolist()) if slot == n]
            if mine:
                log_p = torch.log_softmax(scores[:, n], dim=0)
                columns.append(-sum(log_p[m] for m in mine) / len(mine))
        videos.append(sum(columns) / len(columns))
    return 0.5 * (sum(rows) / len(rows) + sum(videos) / len(videos))


def test_timestamp_alignment_with_slots():
    generator = torch.Generator().manual_seed(7)
    local_seq = torch.randn(2, 5, 6, generator=generator, dtype=torch.float64)
    global_seq = torch.randn(2, 4, 6, generator=generator, dtype=torch.float64)
    slots = torch.tensor([[0, 0, 1, 3, 3], [2, 2, 2, 2, 1]])  # shared slots, unclaimed global steps
    _assert_value_and_grad(
        lambda s, g: timestamp_alignment(s, g, 0.1, slots=slots),
        lambda s, g: _slotted_reference(s, g, slots, 0.1),
        [local_seq, global_seq],
    )
    # The identity slots are MLFO's alignment.
    square = torch.randn(2, 4, 6, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(
        timestamp_alignment(square, global_seq, 0.1, slots=torch.arange(4).repeat(2, 1)),
        timestamp_alignment(square, global_seq, 0.1),
    )
    with pytest.raises(ValueError, match="slots"):
        timestamp_alignment(local_seq, global_seq, 0.1, slots=slots[:, :3])


def test_soft_target_contrast_is_the_cross_entropy_of_cosine_logits():
    generator = torch.Generator().manual_seed(8)
    anchors = F.normalize(torch.randn(3, 4, generator=generator, dtype=torch.float64), dim=1)
    candidates = F.normalize(torch.randn(5, 4, generator=generator, dtype=torch.float64), dim=1)
    targets = torch.rand(3, 5, generator=generator, dtype=torch.float64)
    targets = targets / targets.sum(dim=1, keepdim=True)

    def reference(a, c):
        total = 0.0
        for i in range(3):
            log_p = torch.log_softmax(torch.stack([torch.dot(a[i], c[j]) / 0.2 for j in range(5)]), dim=0)
            total = total - sum(targets[i, j] * log_p[j] for j in range(5))
        return total / 3

    _assert_value_and_grad(
        lambda a, c: soft_target_contrast(a, c, targets, 0.2), reference, [anchors, candidates]
    )


def test_sinkhorn_row_mask_and_stacked_problems_equal_separate_calls_on_the_kept_rows():
    scores = F.normalize(
        torch.randn(2, 9, 5, generator=torch.Generator().manual_seed(33), dtype=torch.float64), dim=-1
    )
    mask = torch.tensor([False, False, False, True, True, True, True, True, True])
    codes = sinkhorn(scores, 0.05, 3, mask)
    assert codes.shape == scores.shape
    for problem in range(2):
        expected = _sinkhorn_reference(scores[problem][mask], 0.05, 3)
        torch.testing.assert_close(codes[problem][mask], expected, atol=1e-10, rtol=1e-9)
        assert torch.equal(codes[problem][~mask], torch.zeros(3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="row_mask"):
        sinkhorn(scores, row_mask=mask[:-1])
