"""MLFO pretraining: every term against a slow float64 reference written from METHODS.md §1, schedules, two
processes against one, the encoder hand-over, and conversion of the authors' checkpoints."""

import datetime
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import hf_vssl
from hf_vssl.convert_mlfo_original import convert_checkpoint

from .mlfo_reference import AuthorsModel

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


def views(num_videos=3, seed=1):
    return torch.randn(
        num_videos, 3, 16, 3, 32, 32, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
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


def reference_terms(model, pixel_values, epoch):
    """Every MLFO term of METHODS.md §1, with explicit loops over videos, clips, time steps and candidates."""
    config = model.config
    n = pixel_values.shape[0]
    stages = model.mlfo(pixel_values.flatten(0, 1), output_hidden_states=True).hidden_states
    seq, rev = {"high": stages[3].mean(dim=(3, 4))}, {}
    for level, stage in (("mid", 2), ("low", 1)):
        x = stages[stage]
        # Tap adapter: the map and its time-reversed copy through the ME block, space pooled away.
        excited = model.motion_excitation[level](torch.cat([x, x.flip(2)])).mean(dim=(3, 4))
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

    high_a = torch.stack([clip(seq["high"], i, 0).mean(dim=1) for i in range(n)])
    high_b = torch.stack([clip(seq["high"], i, 1).mean(dim=1) for i in range(n)])
    embeddings = F.normalize(model.global_head(torch.cat([high_a, high_b])), dim=1)
    prototypes = model.prototypes.weight
    if epoch < config.prototype_freeze_epochs:  # frozen: constants of the objective
        prototypes = prototypes.detach()
    logits = embeddings @ prototypes.T
    logits_a, logits_b = logits[:n], logits[n:]
    k = config.num_prototypes
    pool_a, pool_b = logits_a.detach(), logits_b.detach()
    if epoch >= config.logit_queue_start_epoch:
        past = model.logit_queue.valid_keys().to(logits.dtype)
        pool_a, pool_b = torch.cat([past[:, :k], pool_a]), torch.cat([past[:, k:], pool_b])
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


@pytest.mark.parametrize("epoch", [0, 25])
def test_every_term_matches_the_reference_in_value_and_gradient(epoch):
    model = tiny_model()
    model.train()
    # Past logits in the queue, so that from epoch 10 the codes depend on them.
    model.logit_queue.enqueue(
        torch.randn(6, 2 * 10, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    )
    model.set_epoch(epoch)
    pixel_values = views()
    params = [p for p in model.parameters()]

    expected, expected_labels = reference_terms(model, pixel_values, epoch)
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


def test_prototypes_are_frozen_in_epoch_zero_only():
    model = tiny_model()
    for epoch, frozen in ((0, True), (1, False)):
        model.zero_grad(set_to_none=True)
        model.set_epoch(epoch)
        model(views()).loss.backward()
        grad = model.prototypes.weight.grad
        assert grad is not None  # in the graph, so DDP sees every parameter used
        assert (grad.abs().max() == 0) == frozen
        # Every other parameter gets a gradient: no parameter is unused in a step.
        assert all(p.grad is not None for p in model.parameters())


def test_prototypes_stay_put_under_the_training_optimizer_in_epoch_zero():
    from hf_vssl.train.arguments import PretrainArguments
    from hf_vssl.train.pretrain import build_optimizer

    model = tiny_model()
    optimizer = build_optimizer(PretrainArguments(optimizer="adam", weight_decay=1e-5), model)
    model.after_optimizer_step()  # unit rows in float64 (the model was normalised in float32 and cast)
    before = model.prototypes.weight.detach().clone()
    model.set_epoch(0)
    for _ in range(2):
        model(views()).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        model.after_optimizer_step()
    # Unchanged but for the re-normalisation's rounding (Adam with weight decay would move them by ~lr a step).
    torch.testing.assert_close(model.prototypes.weight.detach(), before, rtol=0, atol=1e-12)
    model.set_epoch(1)
    model(views()).loss.backward()
    optimizer.step()
    assert (model.prototypes.weight.detach() - before).abs().max() > 1e-5


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
    short = hf_vssl.MLFOForPreTraining(tiny_mlfo_config()).double()
    with pytest.raises(ValueError, match="even number"):
        short(torch.randn(2, 3, 8, 3, 32, 32, dtype=torch.float64))


# --- two processes against one ------------------------------------------------------------------------------------


def _loss_and_gradients(model, pixel_values):
    output = model(pixel_values)
    grads = torch.autograd.grad(output.loss, list(model.parameters()))
    return output, [g.detach() for g in grads]


def _two_process_worker(rank, rendezvous, results_path):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{rendezvous}",
        rank=rank,
        world_size=2,
        timeout=datetime.timedelta(seconds=120),
    )
    try:
        model = tiny_model()
        model.eval()
        model.set_epoch(25)
        model.logit_queue.enqueue(
            torch.randn(6, 20, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        )
        pixel_values = views(num_videos=4)[2 * rank : 2 * rank + 2]
        output, grads = _loss_and_gradients(model, pixel_values)
        loss = output.loss.detach().clone()
        dist.all_reduce(loss)
        for grad in grads:  # what DDP does
            dist.all_reduce(grad)
        terms = {name: output[name].detach().clone() for name in TERMS}
        for value in terms.values():
            dist.all_reduce(value)
        if rank == 0:
            torch.save(
                {
                    "loss": loss / 2,
                    "grads": [g / 2 for g in grads],
                    "terms": {k: v / 2 for k, v in terms.items()},
                },
                results_path,
            )
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one_process_on_the_global_batch(tmp_path):
    results_path = tmp_path / "two.pt"
    mp.start_processes(
        _two_process_worker,
        args=(str(tmp_path / "rendezvous"), str(results_path)),
        nprocs=2,
        start_method="spawn",
    )
    two = torch.load(results_path)
    model = tiny_model()
    model.eval()
    model.set_epoch(25)
    model.logit_queue.enqueue(
        torch.randn(6, 20, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    )
    output, grads = _loss_and_gradients(model, views(num_videos=4))
    torch.testing.assert_close(two["loss"], output.loss.detach(), rtol=1e-10, atol=1e-12)
    for name in TERMS:
        torch.testing.assert_close(
            two["terms"][name], output[name].detach(), rtol=1e-10, atol=1e-12, msg=name
        )
    assert output.graph_loss > 0
    for got, want in zip(two["grads"], grads):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-11)


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
