"""A slow float64 reference of ctrlaug's objective, written from the equations of METHODS.md §2 with explicit loops.

It shares only the encoder's stage outputs and the head modules (plain MLPs) with the model under test; region
weights, IoUs, targets, slots and every loss are recomputed here element by element. The mutual-information term
is computed *without* the gradient-reversal layer: the model's encoder gradient of that term must equal
``-strength`` times this reference's, its critic gradient this reference's.
"""

import math

import torch

TUBE_FIELDS = ("t0", "t1", "x0", "y0", "x1", "y1")


def overlap_fraction(start, end, cell, cells):
    """|[start, end] & [cell/cells, (cell+1)/cells]| / (1/cells), a Python float."""
    low, high = cell / cells, (cell + 1) / cells
    return max(0.0, min(float(end), high) - max(float(start), low)) * cells


def cell_weights(tube, grid):
    """Fraction of each cell's volume covered by `tube` (t0, t1, x0, y0, x1, y1): `[T, H, W]` float64."""
    t0, t1, x0, y0, x1, y1 = (float(v) for v in tube)
    frames, height, width = grid
    weights = torch.zeros(frames, height, width, dtype=torch.float64)
    for t in range(frames):
        for h in range(height):
            for w in range(width):
                weights[t, h, w] = (
                    overlap_fraction(t0, t1, t, frames)
                    * overlap_fraction(y0, y1, h, height)
                    * overlap_fraction(x0, x1, w, width)
                )
    return weights


def region_feature(feature_map, tube):
    """Overlap-weighted average of the cells of `feature_map` `[C, T, H, W]` inside `tube`: `[C]`."""
    weights = cell_weights(tube, feature_map.shape[1:])
    total = 0.0
    for t, h, w in torch.nonzero(weights).tolist():
        total = total + weights[t, h, w] * feature_map[:, t, h, w]
    return total / weights.sum()


def iou_3d(a, b):
    a, b = [float(v) for v in a], [float(v) for v in b]
    inter = 1.0
    for start, end in ((0, 1), (2, 4), (3, 5)):
        inter *= max(0.0, min(a[end], b[end]) - max(a[start], b[start]))
    volume_a = (a[1] - a[0]) * (a[4] - a[2]) * (a[5] - a[3])
    volume_b = (b[1] - b[0]) * (b[4] - b[2]) * (b[5] - b[3])
    return inter / (volume_a + volume_b - inter)


def _normalize(v):
    return v / torch.sqrt((v * v).sum())


def _embed(head, vector):
    return _normalize(head(vector[None])[0])


def reference_terms(model, pixel_values, tubes):
    """Every ctrlaug term of METHODS.md §2 for one process holding the whole batch (float64 model and inputs)."""
    config = model.config
    tau = config.temperature
    n, views = pixel_values.shape[:2]
    k = views - 1
    stages = model.ctrlaug(pixel_values.flatten(0, 1), output_hidden_states=True).hidden_states

    def stage(number, video, view):  # [C, T, H, W]
        return stages[number - 1][video * views + view]

    def pooled(video, view):  # global average of stage 4
        return stage(4, video, view).mean(dim=(1, 2, 3))

    terms = {}
    total = 0.0

    if config.use_instance:
        head = model.instance_head
        g = [_embed(head, pooled(i, 0)) for i in range(n)]
        loc = [[_embed(head, pooled(i, 1 + c)) for c in range(k)] for i in range(n)]
        # G_i against all clips: each of its K clips is a positive, contrasted with the other videos' clips.
        global_side = []
        for i in range(n):
            negatives = sum(
                torch.exp(torch.dot(g[i], loc[j][c]) / tau) for j in range(n) if j != i for c in range(k)
            )
            per_positive = []
            for c in range(k):
                positive = torch.exp(torch.dot(g[i], loc[i][c]) / tau)
                per_positive.append(-torch.log(positive / (positive + negatives)))
            global_side.append(sum(per_positive) / k)
        local_side = []
        for i in range(n):
            for c in range(k):
                logits = torch.stack([torch.dot(loc[i][c], g[j]) / tau for j in range(n)])
                local_side.append(-torch.log_softmax(logits, dim=0)[i])
        terms["instance_loss"] = 0.5 * (sum(global_side) / n + sum(local_side) / (n * k))
        total = total + terms["instance_loss"]

    if config.use_region:
        local_z = [[_embed(model.region_local_head, pooled(i, 1 + c)) for c in range(k)] for i in range(n)]
        region_z = [
            [
                _embed(
                    model.region_global_head, region_feature(stage(config.region_stage, i, 0), tubes[i, c])
                )
                for c in range(k)
            ]
            for i in range(n)
        ]

        def soft_direction(anchors, candidates):
            losses = []
            for i in range(n):
                for c in range(k):
                    ious = [iou_3d(tubes[i, c], tubes[i, d]) for d in range(k)]
                    logits = torch.stack(
                        [torch.dot(anchors[i][c], candidates[j][d]) / tau for j in range(n) for d in range(k)]
                    )
                    log_p = torch.log_softmax(logits, dim=0)
                    losses.append(-sum(ious[d] / sum(ious) * log_p[i * k + d] for d in range(k)))
            return sum(losses) / (n * k)

        terms["region_loss"] = 0.5 * (soft_direction(local_z, region_z) + soft_direction(region_z, local_z))
        total = total + terms["region_loss"]

    if config.use_mi:
        tau_c = config.critic_temperature
        x = [[_embed(model.critic_high, pooled(i, 1 + c)) for c in range(k)] for i in range(n)]
        y = [
            [
                _embed(
                    model.critic_low,
                    region_feature(stage(config.low_level_stage, i, 0).detach(), tubes[i, c]),
                )
                for c in range(k)
            ]
            for i in range(n)
        ]
        pairs = [(i, c) for i in range(n) for c in range(k)]
        nce = 0.0
        for i, c in pairs:
            scores = torch.stack([torch.dot(x[i][c], y[j][d]) / tau_c for j, d in pairs])
            nce = nce - torch.log_softmax(scores, dim=0)[pairs.index((i, c))]
        bound = math.log(len(pairs)) - nce / len(pairs)
        terms["mi_loss"] = -bound
        total = total + config.mi_weight * terms["mi_loss"]

    if config.use_order:
        steps = config.order_local_steps
        head = model.order_head
        losses_rows, losses_cols = [], []
        for i in range(n):
            g_seq = head(stage(config.order_stage, i, 0).mean(dim=(2, 3))[None])[0]  # [D, T_G]
            t_g = g_seq.shape[1]
            g_steps = [_normalize(g_seq[:, t]) for t in range(t_g)]
            local_steps, slots = [], []
            for c in range(k):
                seq = head(stage(config.order_stage, i, 1 + c).mean(dim=(2, 3))[None])[0]  # [D, T_L]
                length = seq.shape[1]
                t0, t1 = float(tubes[i, c, 0]), float(tubes[i, c, 1])
                for j in range(steps):  # adaptive average pooling bins
                    start, end = j * length // steps, -(-(j + 1) * length // steps)
                    local_steps.append(_normalize(seq[:, start:end].mean(dim=1)))
                    centre = t0 + (j + 0.5) * (t1 - t0) / steps
                    slots.append(min(max(math.floor(centre * t_g), 0), t_g - 1))
            scores = torch.stack(
                [torch.stack([torch.dot(s, gg) / tau for gg in g_steps]) for s in local_steps]
            )  # [K S, T_G]
            for m, slot in enumerate(slots):
                losses_rows.append(-torch.log_softmax(scores[m], dim=0)[slot])
            columns = []  # every global step that is some local step's slot picks those local steps
            for t in range(t_g):
                mine = [m for m, slot in enumerate(slots) if slot == t]
                if mine:
                    log_p = torch.log_softmax(scores[:, t], dim=0)
                    columns.append(-sum(log_p[m] for m in mine) / len(mine))
            losses_cols.append(sum(columns) / len(columns))  # every video weighs the same
        terms["order_loss"] = 0.5 * (sum(losses_rows) / len(losses_rows) + sum(losses_cols) / n)
        total = total + config.order_weight * terms["order_loss"]

    terms["loss"] = total
    return terms
