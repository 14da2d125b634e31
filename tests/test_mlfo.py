"""MLFO pretraining: every term against a slow float64 reference written from METHODS.md §1, schedules, two
processes against one, the encoder hand-over, and conversion of the authors' checkpoints."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import hf_vssl
from hf_vssl.convert_mlfo_original import convert_checkpoint

from .mlfo_reference import AuthorsModel
from .test_models import CONFIG_ERRORS
from .two_processes import mean_over_processes, run_in_two_processes

TAU = 0.07
LEVEL_WEIGHTS = {"high": 1.0, "mid": 0.5, "low": 0.3}


def tiny_mlfo_config(**overrides):
    return hf_vssl.MLFOConfig(
        embedding_size=8,
        hidden_sizes=[16, 32, 32, 64],
        depths=[1, 1, 1, 1],
        num_frames=16,
        image_size=32,
        projection_dim=16,
        num_prototypes=10,
        logit_queue_size=8,
        motion_excitation_reduction=4,
        **overrides,
    )


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return hf_vssl.MLFOForPreTraining(tiny_mlfo_config(**overrides)).double()


def views(num_videos=3, seed=1, num_frames=16):
    return torch.randn(
        num_videos,
        3,
        num_frames,
        3,
        32,
        32,
        generator=torch.Generator().manual_seed(seed),
        dtype=torch.float64,
    )


# --- the reference ------------------------------------------------------------------------------------------------


def reference_sinkhorn(scores, epsilon=0.05, iterations=3):
    """SwAV's Sinkhorn-Knopp as published: alternate prototype (1/K) and sample (1/N) marginals, rows sum to 1."""
    q = torch.exp(scores / epsilon).T  # [K, N]
    q = q / q.sum()
    k, n = q.shape
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / k
        q = q / q.sum(dim=0, keepdim=True) / n
    return (q * n).T


def reference_terms(model, pixel_values, epoch, past_scores=None):
    """Every MLFO term of METHODS.md §1, with explicit loops over videos, clips, time steps and candidates.

    `past_scores` `[M, 2K]`: the scores of the earlier steps in the order they were pushed (the logit queue's
    history), for the codes from epoch `logit_queue_start_epoch` on.
    """
    config = model.config
    n = pixel_values.shape[0]
    stages = model.mlfo(pixel_values.flatten(0, 1), output_hidden_states=True).hidden_states
    steps = dict(zip(("high", "mid", "low"), config.level_time_steps))

    def pool(x, level):  # [n, C, T, H, W] -> [n, C, steps]: space averaged, time in adaptive-pooling bins
        x, length = x.mean(dim=(3, 4)), x.shape[2]
        bins = [
            (m * length // steps[level], -(-(m + 1) * length // steps[level])) for m in range(steps[level])
        ]
        return torch.stack([x[..., start:end].mean(dim=-1) for start, end in bins], dim=-1)

    seq, rev = {"high": pool(stages[3], "high")}, {}
    for level, stage in (("mid", 2), ("low", 1)):
        x = stages[stage]
        # Tap adapter: the map and its time-reversed copy through the ME block, space pooled away.
        excited = pool(model.motion_excitation[level](torch.cat([x, x.flip(2)])), level)
        seq[level], rev[level] = excited[: 3 * n], excited[3 * n :]

    def clip(sequence, video, view):  # view 0 = A, 1 = B, 2 = G; [C, T]
        return sequence[3 * video + view]

    def embed(head, sequence):  # time-pointwise head, time mean, L2 norm
        return F.normalize(head(sequence[None])[0].mean(dim=-1), dim=0)

    def sim(a, b):
        return torch.dot(a, b) / TAU

    def contrast(head, sequence, reversed_sequence=None):
        z = [[embed(head, clip(sequence, i, a)) for a in (0, 1)] for i in range(n)]
        losses = []
        for i in range(n):
            for a in (0, 1):
                positive = torch.exp(sim(z[i][a], z[i][1 - a]))
                negatives = sum(torch.exp(sim(z[i][a], z[j][c])) for j in range(n) if j != i for c in (0, 1))
                if reversed_sequence is not None:  # the anchor's own two clips, time-reversed
                    for c in (0, 1):
                        negatives = negatives + torch.exp(
                            sim(z[i][a], embed(head, clip(reversed_sequence, i, c)))
                        )
                losses.append(-torch.log(positive / (positive + negatives)))
        affinity = torch.stack(
            [torch.softmax(torch.stack([sim(z[i][0], z[j][1]) for j in range(n)]), dim=0) for i in range(n)]
        )
        return torch.stack(losses).mean(), affinity.detach()

    terms = {}
    terms["instance_loss"], affinity = contrast(model.projections["high"]["instance"], seq["high"])
    for level in ("mid", "low"):
        terms[f"motion_loss_{level}"], _ = contrast(
            model.projections[level]["instance"], seq[level], rev[level]
        )

    for level in ("high", "mid", "low"):
        head = model.projections[level]["timestamp"]
        per_video = []
        for i in range(n):
            a, b, g = (head(clip(seq[level], i, v)[None])[0] for v in (0, 1, 2))  # [D, T]
            steps = g.shape[1]
            local = [a[:, 2 * m : 2 * m + 2].mean(dim=1) for m in range(steps // 2)]
            local += [b[:, 2 * m : 2 * m + 2].mean(dim=1) for m in range(steps // 2)]
            s = [F.normalize(x, dim=0) for x in local]
            gg = [F.normalize(g[:, t], dim=0) for t in range(steps)]
            scores = torch.stack(
                [torch.stack([sim(s[m], gg[k]) for k in range(steps)]) for m in range(steps)]
            )
            rows = sum(-torch.log_softmax(scores[m], dim=0)[m] for m in range(steps)) / steps
            cols = sum(-torch.log_softmax(scores[:, k], dim=0)[k] for k in range(steps)) / steps
            per_video.append(0.5 * (rows + cols))
        terms[f"timestamp_loss_{level}"] = torch.stack(per_video).mean()

    # The global head sees all three clips (its batch norm's batch), only A and B are scored.
    high = torch.stack(
        [torch.stack([clip(seq["high"], i, v).mean(dim=1) for i in range(n)]) for v in (0, 1, 2)]
    )
    embeddings = F.normalize(model.global_head(high.flatten(0, 1)), dim=1)[: 2 * n]
    logits = embeddings @ model.prototypes.weight.T
    logits_a, logits_b = logits[:n], logits[n:]
    k = config.num_prototypes
    pool_a, pool_b = logits_a.detach(), logits_b.detach()
    if epoch >= config.logit_queue_start_epoch:
        # The code's FIFO of `logit_queue_size` rows, into which the batch is pushed before it is read.
        fifo = torch.cat([past_scores, torch.cat([pool_a, pool_b], dim=1)])[-config.logit_queue_size :]
        pool_a, pool_b = fifo[:, :k], fifo[:, k:]
    codes_a = reference_sinkhorn(pool_a)[-n:]
    codes_b = reference_sinkhorn(pool_b)[-n:]
    prototype = 0.0
    for i in range(n):
        log_p_a = torch.log_softmax(logits_a[i] / 0.1, dim=0)
        log_p_b = torch.log_softmax(logits_b[i] / 0.1, dim=0)
        prototype = prototype - 0.5 * (
            sum(codes_b[i, c] * log_p_a[c] for c in range(k))
            + sum(codes_a[i, c] * log_p_b[c] for c in range(k))
        )
    terms["prototype_loss"] = prototype / n
    labels = [int(torch.argmax(codes_a[i] + codes_b[i])) for i in range(n)]

    graph = torch.zeros(n, n, dtype=affinity.dtype)
    for i in range(n):
        for j in range(n):
            keep = i == j or affinity[i, j] >= config.graph_threshold
            graph[i, j] = affinity[i, j] * keep * (labels[i] == labels[j])
        graph[i] = graph[i] / graph[i].sum()
    graph_loss = 0.0
    for level in ("high", "mid", "low"):
        head = model.projections[level]["graph"]
        r_a = [embed(head, clip(seq[level], i, 0)) for i in range(n)]
        r_b = [embed(head, clip(seq[level], j, 1)) for j in range(n)]
        level_loss = 0.0
        for i in range(n):
            log_p = torch.log_softmax(torch.stack([sim(r_a[i], r_b[j]) for j in range(n)]), dim=0)
            level_loss = (
                level_loss - sum(graph[i, j] * log_p[j] for j in range(n)) / n
            )  # the code's mean over N
        graph_loss = graph_loss + LEVEL_WEIGHTS[level] * level_loss / n
    terms["graph_loss"] = graph_loss * (epoch >= config.graph_start_epoch)

    total = terms["instance_loss"] + terms["timestamp_loss_high"]
    total = total + 0.5 * (terms["motion_loss_mid"] + terms["timestamp_loss_mid"])
    total = total + 0.3 * (terms["motion_loss_low"] + terms["timestamp_loss_low"])
    total = total + 0.5 * terms["prototype_loss"] + terms["graph_loss"]
    terms["loss"] = total
    return terms, torch.tensor(labels)


TERMS = [
    "loss",
    "instance_loss",
    "motion_loss_mid",
    "motion_loss_low",
    "timestamp_loss_high",
    "timestamp_loss_mid",
    "timestamp_loss_low",
    "prototype_loss",
    "graph_loss",
]


@pytest.mark.parametrize("epoch, num_frames, num_past", [(0, 16, 6), (25, 16, 13), (25, 24, 2)])
def test_every_term_matches_the_reference_in_value_and_gradient(epoch, num_frames, num_past):
    # 24 frames: the levels hold 12 / 6 / 3 time steps and are pooled to 8 / 4 / 2 (uneven bins).
    model = tiny_model()
    model.train()
    # Past logits in the queue of 8, so that from epoch 10 the codes depend on them: 13 pushed rows wrap it
    # (Sinkhorn over the 3 current and the 5 newest past rows), 2 leave it filling (over 2 + 3 rows).
    past_scores = torch.randn(
        num_past, 2 * 10, generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    model.logit_queue.enqueue(past_scores)
    model.set_epoch(epoch)
    pixel_values = views(num_frames=num_frames)
    params = [p for p in model.parameters()]

    expected, expected_labels = reference_terms(model, pixel_values, epoch, past_scores)
    output = model(pixel_values)
    for name in TERMS:
        torch.testing.assert_close(
            output[name], expected[name].to(output[name].dtype), rtol=1e-9, atol=1e-10, msg=name
        )
    assert torch.equal(output.cluster_labels, expected_labels)
    if epoch >= 20:
        assert output.graph_loss > 0
    # Gradients of each term separately, so that a wrong gradient path in one term cannot hide in the total.
    for name in TERMS:
        if name == "graph_loss" and epoch < 20:
            continue
        got = torch.autograd.grad(output[name], params, retain_graph=True, allow_unused=True)
        want = torch.autograd.grad(expected[name], params, retain_graph=True, allow_unused=True)
        for param_name, g, w in zip([n for n, _ in model.named_parameters()], got, want):
            g = torch.zeros_like(params[0]) if g is None else g
            w = torch.zeros_like(g) if w is None else w
            if g.shape != w.shape:
                g = torch.zeros_like(w)
            torch.testing.assert_close(g, w, rtol=1e-7, atol=1e-9, msg=f"{name} / {param_name}")


# --- schedules ----------------------------------------------------------------------------------------------------


def _graph_head_parameters(model):
    return [p for level in ("high", "mid", "low") for p in model.projections[level]["graph"].parameters()]


@pytest.mark.parametrize(
    "epoch, prototypes_active, graph_active", [(0, False, False), (1, True, False), (20, True, True)]
)
def test_inactive_terms_leave_their_parameters_without_gradient(epoch, prototypes_active, graph_active):
    model = tiny_model()
    model.set_epoch(epoch)
    model(views()).loss.backward()
    # Every parameter is in the graph, so DDP sees every parameter used ...
    assert all(p.grad is not None for p in model.parameters())
    model.before_optimizer_step()
    # ... and the optimizer skips those of the terms that are not active yet.
    assert (model.prototypes.weight.grad is not None) == prototypes_active
    assert all((p.grad is not None) == graph_active for p in _graph_head_parameters(model))
    inactive = {id(model.prototypes.weight)} if not prototypes_active else set()
    inactive |= {id(p) for p in _graph_head_parameters(model)} if not graph_active else set()
    assert all(p.grad is not None for p in model.parameters() if id(p) not in inactive)


def test_inactive_parameters_stay_put_under_the_training_loop_optimizer():
    """Adam with weight decay, as the authors train: the frozen prototypes and the graph heads before the graph
    term are untouched (no decay, no Adam state), like the authors' parameters without gradient."""
    from hf_vssl.train.arguments import PretrainArguments
    from hf_vssl.train.pretrain import build_optimizer

    model = tiny_model()
    optimizer = build_optimizer(PretrainArguments(optimizer="adam", weight_decay=1e-5), model)
    model.after_optimizer_step()  # unit rows in float64 (the model was normalised in float32 and cast)
    graph_heads = _graph_head_parameters(model)
    before = [p.detach().clone() for p in (model.prototypes.weight, *graph_heads)]

    def step(epoch):
        model.set_epoch(epoch)
        model(views()).loss.backward()
        model.before_optimizer_step()
        optimizer.step()
        optimizer.zero_grad()
        model.after_optimizer_step()

    for _ in range(2):
        step(0)
    # Unchanged but for the re-normalisation's rounding (a zero gradient plus decay would move them ~lr a step).
    for param, old in zip((model.prototypes.weight, *graph_heads), before):
        torch.testing.assert_close(param.detach(), old, rtol=0, atol=1e-12)
        assert param not in optimizer.state  # Adam has not counted a step for them
    step(1)
    assert (model.prototypes.weight.detach() - before[0]).abs().max() > 1e-5
    assert all(torch.equal(p.detach(), old) for p, old in zip(graph_heads, before[1:]))
    step(20)
    assert all((p.detach() - old).abs().max() > 1e-5 for p, old in zip(graph_heads, before[1:]))
    assert optimizer.state[graph_heads[0]]["step"] == 1


def test_logit_queue_joins_the_codes_from_epoch_ten():
    model = tiny_model()
    model.eval()  # no enqueue, so both queue contents below meet the same batch
    pixel_values = views()
    losses = {}
    for epoch in (9, 10):
        model.set_epoch(epoch)
        for fill in (0, 1):
            model.logit_queue.clear()
            model.logit_queue.enqueue(
                torch.randn(8, 20, generator=torch.Generator().manual_seed(fill), dtype=torch.float64)
            )
            losses[epoch, fill] = model(pixel_values).prototype_loss.item()
    assert losses[9, 0] == losses[9, 1]
    assert losses[10, 0] != losses[10, 1]


@pytest.mark.parametrize("num_videos", [3, 8, 11])
def test_sinkhorn_runs_over_the_fifo_window_of_queue_size_rows(monkeypatch, num_videos):
    """From epoch 10 the codes come from `logit_queue_size` rows: the batch and the newest past rows, as in the
    code's FIFO that is updated before it is read. Step by step from an empty queue (3 videos a step, queue of
    8): 3 rows (nothing past), 6, then 8 = 3 current + 5 newest past, with the queue's storage wrapped; a batch
    as large as the queue or larger runs alone. The rows are compared in order, the code's (oldest first, the
    batch last): Sinkhorn is permutation-equivariant over rows only up to rounding, the choice of rows is exact.
    """
    import hf_vssl.modeling_mlfo as modeling_mlfo

    pools = []

    def recording_sinkhorn(scores, epsilon, iterations, row_mask=None):
        # the rows that take part (the pool has a full window's rows while the queue fills), A's and B's
        kept = scores[..., row_mask, :] if row_mask is not None else scores
        pools.extend(kept.unbind(0) if kept.ndim == 3 else [kept])
        return modeling_sinkhorn(scores, epsilon, iterations, row_mask)

    modeling_sinkhorn = modeling_mlfo.sinkhorn
    monkeypatch.setattr(modeling_mlfo, "sinkhorn", recording_sinkhorn)
    model = tiny_model(use_motion_contrast=False, use_timestamp_alignment=False, use_graph=False)
    model.train()
    model.set_epoch(10)
    pushed = torch.zeros(0, 20, dtype=torch.float64)  # every step's current rows, in the order pushed
    for step in range(4):
        pools.clear()
        model(views(num_videos=num_videos, seed=step))
        pool = torch.cat(pools, dim=1)  # the A and B halves, side by side as the queue holds them
        current = pool[-num_videos:]
        assert pool.shape[0] == min(num_videos * (step + 1), max(8, num_videos)), step
        assert torch.equal(pool, torch.cat([pushed, current])[-max(8, num_videos) :]), step
        assert torch.equal(model.logit_queue.newest(num_videos), current[-8:])  # then pushed, in training
        pushed = torch.cat([pushed, current])


def test_training_fills_the_logit_queue_with_every_videos_scores():
    model = tiny_model()
    model.train()
    model(views(num_videos=3))
    assert len(model.logit_queue) == 3
    model.eval()
    model(views(num_videos=3))
    assert len(model.logit_queue) == 3


def test_graph_term_starts_at_graph_start_epoch():
    model = tiny_model()
    for epoch, active in ((19, False), (20, True)):
        model.set_epoch(epoch)
        graph_loss = model(views()).graph_loss
        assert (graph_loss.item() > 0) == active


def test_after_optimizer_step_renormalises_prototypes():
    model = tiny_model()
    with torch.no_grad():
        model.prototypes.weight.mul_(3.0)
    model.after_optimizer_step()
    torch.testing.assert_close(model.prototypes.weight.norm(dim=1), torch.ones(10, dtype=torch.float64))


def test_switches_leave_the_instance_baseline():
    config = dict(
        use_motion_contrast=False, use_timestamp_alignment=False, use_prototypes=False, use_graph=False
    )
    model = tiny_model(**config)
    output = model(views())
    assert output.loss is not None and output.instance_loss is not None
    assert [name for name in TERMS if getattr(output, name) is not None] == ["loss", "instance_loss"]
    torch.testing.assert_close(output.loss, output.instance_loss)
    # Nothing but the encoder and the high-level instance head is built.
    assert {name.split(".")[0] for name, _ in model.named_parameters()} == {"mlfo", "projections"}
    assert list(model.projections["high"]) == ["instance"] and not model.motion_excitation


def test_bad_views_are_a_clear_error():
    model = tiny_model()
    with pytest.raises(ValueError, match="3 views"):
        model(torch.randn(2, 16, 3, 32, 32, dtype=torch.float64))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"level_time_steps": [2, 3, 8]}, "must be even"),
        ({"level_time_steps": [2, 4]}, "3 positive numbers"),
        ({"gather_gradient": "some"}, "gather_gradient"),
    ],
)
def test_bad_objective_settings_are_a_clear_error(overrides, message):
    with pytest.raises(CONFIG_ERRORS, match=message):
        tiny_mlfo_config(**overrides)


def test_odd_time_steps_are_fine_without_timestamp_alignment():
    model = tiny_model(level_time_steps=[1, 3, 5], use_timestamp_alignment=False)
    assert torch.isfinite(model(views()).loss)


def test_graph_targets_follow_the_equations():
    """G = row-normalise(G_ins * G_sem): instance affinities below the threshold dropped (the diagonal kept),
    restricted to the anchor's cluster, on hand-made affinities where both parts matter."""
    model = tiny_model()
    affinity = torch.tensor(
        [
            [0.01, 0.60, 0.30, 0.09],  # own affinity below the threshold: kept anyway
            [0.50, 0.20, 0.26, 0.04],  # 0.26: another cluster; 0.04: below the threshold
            [0.10, 0.10, 0.70, 0.10],
            [0.25, 0.25, 0.25, 0.25],
        ],
        dtype=torch.float64,
    )
    labels = torch.tensor([3, 3, 5, 3])
    expected = torch.zeros(4, 4, dtype=torch.float64)
    for i in range(4):
        for j in range(4):
            kept = i == j or affinity[i, j] >= 0.05
            expected[i, j] = affinity[i, j] * kept * (labels[i] == labels[j])
        expected[i] /= expected[i].sum()
    targets = model._graph_targets(affinity, labels)
    torch.testing.assert_close(targets, expected, rtol=0, atol=1e-15)
    assert (
        targets[1, 2] == 0
        and targets[1, 3] == 0
        and targets[0, 0] > 0
        and targets[2].tolist() == [0, 0, 1, 0]
    )


# --- two processes against one ------------------------------------------------------------------------------------


def _loss_and_gradients(model, pixel_values):
    output = model(pixel_values)
    grads = torch.autograd.grad(output.loss, list(model.parameters()))
    return output, [g.detach() for g in grads]


def _single_process_model(**overrides):
    model = tiny_model(**overrides)
    model.eval()
    model.set_epoch(25)
    model.logit_queue.enqueue(
        torch.randn(6, 20, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    )
    return model


GATHER_GRADIENTS = ("all", "local")


def _two_process_worker(rank):
    results = {}
    for mode in GATHER_GRADIENTS:
        model = _single_process_model(gather_gradient=mode)
        output, grads = _loss_and_gradients(model, views(num_videos=4)[2 * rank : 2 * rank + 2])
        results[mode] = {
            "loss": mean_over_processes(output.loss),
            "grads": [mean_over_processes(g) for g in grads],
            "terms": {name: mean_over_processes(output[name]) for name in TERMS},
        }
    return results


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    return run_in_two_processes(_two_process_worker, tmp_path_factory.mktemp("mlfo_two_processes"))[0]


@pytest.mark.parametrize("mode", GATHER_GRADIENTS)
def test_two_processes_match_one_process_on_the_global_batch(two_process_results, mode):
    """Every term in value with either gather; the gradients too with `gather_gradient="all"`. The default
    (the code's local gradient) drops the cross-process terms: its exact gradient is checked on the gather
    itself in test_distributed.py."""
    two = two_process_results[mode]
    model = _single_process_model(gather_gradient=mode)
    output, grads = _loss_and_gradients(model, views(num_videos=4))
    torch.testing.assert_close(two["loss"], output.loss.detach(), rtol=1e-10, atol=1e-12)
    for name in TERMS:
        torch.testing.assert_close(
            two["terms"][name], output[name].detach(), rtol=1e-10, atol=1e-12, msg=name
        )
    assert output.graph_loss > 0
    if mode == "all":
        for got, want in zip(two["grads"], grads):
            torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-11)
    else:
        assert not all(torch.allclose(got, want, rtol=1e-4) for got, want in zip(two["grads"], grads))


# --- hand-over and conversion -------------------------------------------------------------------------------------


def test_pretrained_encoder_hands_over_without_key_surgery(tmp_path):
    model = tiny_model().float().eval()
    model.save_pretrained(tmp_path / "pretraining")
    encoder = hf_vssl.MLFOModel.from_pretrained(tmp_path / "pretraining", dtype=torch.float32).eval()
    model.mlfo.save_pretrained(tmp_path / "encoder")
    from safetensors.torch import load_file

    assert all(
        not key.startswith(("projections", "prototypes", "motion_excitation"))
        for key in load_file(tmp_path / "encoder" / "model.safetensors")
    )
    clip = torch.randn(2, 16, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            encoder(clip).pooler_output, model.mlfo(clip).pooler_output, rtol=0, atol=0
        )
    reloaded = hf_vssl.MLFOForPreTraining.from_pretrained(tmp_path / "pretraining", dtype=torch.float32)
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name


def _authors_checkpoint(tmp_path, with_heads=True):
    torch.manual_seed(3)
    reference = AuthorsModel().eval()
    for module in reference.modules():  # non-trivial statistics, so a swapped norm shows
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    state_dict = reference.state_dict()
    if not with_heads:
        state_dict = {k: v for k, v in state_dict.items() if k.startswith("backbone.") and ".me" not in k}
    path = tmp_path / "r3d_99_1.234.pth"
    torch.save(state_dict, path)
    return reference, path


def test_converted_authors_checkpoint_computes_the_same_functions(tmp_path):
    reference, path = _authors_checkpoint(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "hf_vssl.convert_mlfo_original", str(path), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    encoder = hf_vssl.MLFOModel.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    model = hf_vssl.MLFOForPreTraining.from_pretrained(
        tmp_path / "out" / "pretraining", dtype=torch.float32
    ).eval()
    assert model.config.num_prototypes == 10 and model.config.hidden_sizes == [16, 32, 32, 64]

    clip = torch.randn(2, 3, 16, 32, 32)
    with torch.no_grad():
        feat, melow, memid, (low, mid, high) = reference.backbone(clip)
        stages = encoder(clip.transpose(1, 2), output_hidden_states=True).hidden_states
        for got, want in zip(stages[1:], (low, mid, high)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        for level, stage, want in (("low", stages[1], melow), ("mid", stages[2], memid)):
            got = model.motion_excitation[level](torch.cat([stage, stage.flip(2)])).mean(dim=(3, 4))
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        pairs = {
            ("high", "instance"): (reference.project, feat),
            ("high", "timestamp"): (reference.project_fine, feat),
            ("high", "graph"): (reference.project_graph, feat),
            ("mid", "instance"): (reference.project_mid, memid),
            ("mid", "graph"): (reference.project_mid_graph, memid),
            ("low", "timestamp"): (reference.project_low_fine, melow),
        }
        for (level, use), (authors_head, inputs) in pairs.items():
            torch.testing.assert_close(
                model.projections[level][use](inputs), authors_head(inputs), rtol=1e-5, atol=1e-6
            )
        pooled = feat.mean(dim=2)
        torch.testing.assert_close(
            model.global_head(pooled), reference.project_global(pooled), rtol=1e-5, atol=1e-6
        )
        torch.testing.assert_close(model.prototypes.weight, reference.prototype.weight)


def test_backbone_only_checkpoint_converts_to_the_encoder(tmp_path):
    reference, path = _authors_checkpoint(tmp_path, with_heads=False)
    encoder, pretraining = convert_checkpoint(path, tmp_path / "out")
    assert pretraining is None and not (tmp_path / "out" / "pretraining").exists()
    clip = torch.randn(1, 3, 16, 32, 32)
    with torch.no_grad():
        high = reference.backbone(clip)[3][2]
        torch.testing.assert_close(
            encoder.eval()(clip.transpose(1, 2)).last_hidden_state, high, rtol=1e-5, atol=1e-6
        )


def test_conversion_rejects_other_checkpoints(tmp_path):
    torch.save({"encoder.blocks.0.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(KeyError, match="not a key of the MLFO authors' model"):
        convert_checkpoint(tmp_path / "other.pth", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        convert_checkpoint(tmp_path / "missing.pth", tmp_path / "out")
    torch.save({"state_dict": [1, 2]}, tmp_path / "list.pth")
    with pytest.raises(ValueError, match="state dict of tensors"):
        convert_checkpoint(tmp_path / "list.pth", tmp_path / "out")


def test_reference_sinkhorn_rows_are_distributions():
    codes = reference_sinkhorn(torch.randn(6, 4, dtype=torch.float64))
    torch.testing.assert_close(codes.sum(dim=1), torch.ones(6, dtype=torch.float64))
