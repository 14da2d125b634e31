"""HDC pretraining: every InfoNCE term against a slow float64 reference written from METHODS.md §3, the momentum
update, the queues and the measured weights by hand, two processes against one, the encoder hand-over and loading
through remote code, and an exact resume of a training run."""

import json
import sys

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

import hf_vssl
from hf_vssl.heads import FeatureQueue

from .test_models import CONFIG_ERRORS
from .training_runs import PRETRAIN, TINY_MODEL, final_checkpoint_weights, run_args, run_ok
from .two_processes import mean_over_processes, run_in_two_processes

TAU = 0.07
STAGES = (2, 3, 4)


def tiny_hdc_config(**overrides):
    values = dict(TINY_MODEL, num_frames=8, queue_size=10, invariance_momentum=0.9)
    return hf_vssl.HDCConfig(**{**values, **overrides})


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return hf_vssl.HDCForPreTraining(tiny_hdc_config(**overrides)).double()


def views(num_videos=3, seed=1, num_frames=8):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_videos, 3, num_frames, 3, 32, 32, generator=generator, dtype=torch.float64)


def freeze_batch_norm(model):
    """Training mode (queues and EMA update) with batch norm on its running statistics, so that a forward's
    outputs do not depend on how the batch is split (reference loops, two processes)."""
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    return model


def perturb_momentum_copy(model, seed=7):
    """Make the key encoder differ from the online one (as after training steps), so that a mix-up shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.momentum_encoder.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))


def fill_queues(model, num_keys, seed=5):
    generator = torch.Generator().manual_seed(seed)
    for level in model.queues.values():
        for queue in level.values():
            keys = torch.randn(num_keys, queue.dim, generator=generator, dtype=torch.float64)
            queue.enqueue(F.normalize(keys, dim=1))


# --- the reference ------------------------------------------------------------------------------------------------


def grouped_stage_outputs(model, pixel_values, subtasks, order):
    """Every video's four stage outputs from one backbone call per batch-norm group, by explicit loops: the anchors
    in `batch_norm_splits` groups of consecutive videos (online encoder), the positives of both subtasks in as many
    groups of the videos taken in `order` (momentum copy). With `reversed_anchor_negatives` each anchor group also
    holds its anchors with the frame order reversed, one by one. Returns `online[stage][video]`,
    `reversed_online[stage][video]` (None without reversed negatives) and `keyed[s][stage][video]`.
    """
    n, splits = pixel_values.shape[0], model.config.batch_norm_splits
    size, view = n // splits, {"spatial": 1, "temporal": 2}
    reverse = model.config.reversed_anchor_negatives and "temporal" in subtasks
    online = [[None] * n for _ in range(4)]
    reversed_online = [[None] * n for _ in range(4)]
    keyed = {s: [[None] * n for _ in range(4)] for s in subtasks}
    for group in range(splits):
        anchors = list(range(group * size, (group + 1) * size))
        clips = [pixel_values[video, 0] for video in anchors]
        if reverse:
            num_frames = pixel_values.shape[2]
            clips += [
                torch.stack([pixel_values[video, 0, num_frames - 1 - t] for t in range(num_frames)])
                for video in anchors
            ]
        stages = model.hdc.backbone(torch.stack(clips).transpose(1, 2))
        for row, video in enumerate(anchors):
            for index in range(4):
                online[index][video] = stages[index][row]
                if reverse:
                    reversed_online[index][video] = stages[index][size + row]
        clips = [(s, int(video)) for video in order[group * size : (group + 1) * size] for s in subtasks]
        with torch.no_grad():
            positives = torch.stack([pixel_values[video, view[s]] for s, video in clips])
            stages = model.momentum_encoder.backbone(positives.transpose(1, 2))
        for row, (s, video) in enumerate(clips):
            for index in range(4):
                keyed[s][index][video] = stages[index][row]
    return online, reversed_online, keyed


def reference_terms(model, pixel_values, order=None):
    """METHODS.md §3 with explicit loops over levels, subtasks, videos and candidates (float64).

    The online encoder and its heads see the anchors, the momentum copy the positives (in batch-norm groups, see
    `grouped_stage_outputs`; `order`: the shuffle of the positives, default none); negatives are every other
    video's key of the batch (`batch_negatives`) and the valid queue slots, and with `reversed_anchor_negatives` the
    temporal subtask's own reversed anchor r_i = norm(head_T(pool(stage(anchor_i played backwards)))). Returns the terms, the weights and the
    invariance EMA after this batch, computed from the model's state before the forward.
    """
    config = model.config
    n = pixel_values.shape[0]
    alpha = {"spatial": config.spatial_weight, "temporal": 1 - config.spatial_weight}
    subtasks = [s for s in ("spatial", "temporal") if alpha[s] > 0]
    order = torch.arange(n) if order is None else order
    online, reversed_online, keyed = grouped_stage_outputs(model, pixel_values, subtasks, order)
    terms, cosines = {}, []
    for stage in config.tap_stages:
        level = f"stage{stage}"
        level_cosines = []
        for s in subtasks:
            head, key_head = model.heads[level][s], model.momentum_encoder.heads[level][s]
            queue = model.queues[level][s]
            queued = [queue.queue[m].clone() for m in range(int(queue.filled))]
            q = [
                F.normalize(head(online[stage - 1][i].mean(dim=(1, 2, 3))[None])[0], dim=0) for i in range(n)
            ]
            with torch.no_grad():
                k = [
                    F.normalize(key_head(keyed[s][stage - 1][i].mean(dim=(1, 2, 3))[None])[0], dim=0)
                    for i in range(n)
                ]
            losses = []
            for i in range(n):
                positive = torch.exp(torch.dot(q[i], k[i]) / TAU)
                negatives = 0.0
                if config.batch_negatives:
                    negatives = negatives + sum(
                        torch.exp(torch.dot(q[i], k[j]) / TAU) for j in range(n) if j != i
                    )
                negatives = negatives + sum(torch.exp(torch.dot(q[i], key) / TAU) for key in queued)
                if s == "temporal" and config.reversed_anchor_negatives:
                    r = F.normalize(head(reversed_online[stage - 1][i].mean(dim=(1, 2, 3))[None])[0], dim=0)
                    negatives = negatives + torch.exp(torch.dot(q[i], r) / TAU)
                losses.append(-torch.log(positive / (positive + negatives)))
                level_cosines.append(torch.dot(q[i], k[i]).detach())
            terms[f"{s}_loss_{level}"] = sum(losses) / n
        cosines.append(sum(level_cosines) / len(level_cosines))
    invariance = [
        config.invariance_momentum * model.invariance[index]
        + (1 - config.invariance_momentum) * cosines[index]
        for index in range(len(cosines))
    ]
    if config.invariance_weighting == "fixed":
        weights = [float(w) for w in config.fixed_level_weights]
    else:
        floored = [max(float(e), config.invariance_floor) for e in invariance]
        weights = [len(floored) * e / sum(floored) for e in floored]
    total = 0.0
    for weight, stage in zip(weights, config.tap_stages):
        total = total + weight * sum(alpha[s] * terms[f"{s}_loss_stage{stage}"] for s in subtasks)
    terms["loss"] = total
    return terms, torch.tensor(weights, dtype=torch.float64), torch.stack(invariance)


def online_parameters(model):
    return [p for name, p in model.named_parameters() if not name.startswith("momentum_encoder.")]


@pytest.mark.parametrize(
    "overrides, queued",
    [
        ({}, 4),  # part of each queue filled: empty slots are no negatives
        ({}, 13),  # wrapped around: every slot holds a key
        ({"batch_negatives": False, "spatial_weight": 0.3}, 6),
        ({"invariance_weighting": "fixed", "tap_stages": [3, 4], "fixed_level_weights": [0.5, 1.0]}, 4),
        ({"reversed_anchor_negatives": True}, 4),
        ({"reversed_anchor_negatives": True, "spatial_weight": 0.0, "batch_negatives": False}, 13),
    ],
)
def test_every_term_matches_the_reference_in_value_and_gradient(overrides, queued):
    model = freeze_batch_norm(tiny_model(**overrides))
    perturb_momentum_copy(model)
    fill_queues(model, queued)
    with torch.no_grad():
        model.invariance.copy_(torch.linspace(0.2, 0.9, len(model.config.tap_stages), dtype=torch.float64))
    pixel_values = views()
    expected, weights, invariance = reference_terms(model, pixel_values)
    output = model(pixel_values)
    for name, value in expected.items():
        torch.testing.assert_close(output[name], value, rtol=1e-10, atol=1e-12, msg=name)
    torch.testing.assert_close(output.level_weights, weights, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.invariance, invariance, rtol=1e-12, atol=1e-12)
    if "tap_stages" not in overrides:
        assert set(name for name in output.keys() if "_loss_" in name) == set(expected) - {"loss"}
    params = online_parameters(model)
    got = torch.autograd.grad(output.loss, params, allow_unused=True)
    want = torch.autograd.grad(expected["loss"], params, allow_unused=True)
    for (name, _), g, w in zip(
        [(n, p) for n, p in model.named_parameters() if not n.startswith("momentum_encoder.")], got, want
    ):
        assert (g is None) == (w is None), name
        if g is not None:
            torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-11, msg=name)


@pytest.mark.parametrize("objective", [{}, {"reversed_anchor_negatives": True}])
def test_shuffled_batch_norm_groups_match_the_reference_in_value_and_gradient(objective):
    """Batch norm on batch statistics (training mode), 2 splits: the anchors (and their reversed copies) normalised
    in two groups of consecutive videos, the positives in two groups after one permutation drawn from torch's
    generator; nothing else changes."""
    model = tiny_model(batch_norm_splits=2, **objective).train()
    perturb_momentum_copy(model)
    fill_queues(model, 4)
    pixel_values = views(num_videos=4)
    torch.manual_seed(1)
    order = torch.randperm(4)
    assert order[:2].sort().values.tolist() not in ([0, 1], [2, 3])  # the key groups differ from the anchors'
    expected, weights, invariance = reference_terms(model, pixel_values, order)
    unsplit = tiny_model(**objective).train()
    unsplit.load_state_dict(model.state_dict())
    torch.manual_seed(1)
    output = model(pixel_values)
    for name, value in expected.items():
        torch.testing.assert_close(output[name], value, rtol=1e-10, atol=1e-12, msg=name)
    torch.testing.assert_close(model.invariance, invariance, rtol=1e-12, atol=1e-12)
    params = online_parameters(model)
    for g, w in zip(
        torch.autograd.grad(output.loss, params, allow_unused=True),
        torch.autograd.grad(expected["loss"], params, allow_unused=True),
    ):
        assert (g is None) == (w is None)
        if g is not None:
            torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-11)
    # The grouping matters with batch statistics, and is all that changes: with batch norm on running statistics
    # the split and shuffled model gives the unsplit model's loss.
    assert not torch.allclose(unsplit(pixel_values).loss, output.loss, rtol=1e-6)
    frozen, frozen_unsplit = (
        freeze_batch_norm(tiny_model(batch_norm_splits=2, **objective)),
        freeze_batch_norm(tiny_model(**objective)),
    )
    perturb_momentum_copy(frozen), perturb_momentum_copy(frozen_unsplit)
    torch.testing.assert_close(
        frozen(pixel_values).loss, frozen_unsplit(pixel_values).loss, rtol=1e-12, atol=0
    )


def test_gradients_do_not_reach_the_key_encoder_or_the_queues():
    model = tiny_model().float().train()
    fill_queues(model, 4)
    output = model(views().float())
    output.loss.backward()
    assert all(not p.requires_grad and p.grad is None for p in model.momentum_encoder.parameters())
    assert all(p.grad is not None for p in online_parameters(model))
    assert all(not buffer.requires_grad for buffer in model.buffers())
    # The optimizer of the training loop takes only what trains: the online encoder and heads.
    from hf_vssl.train.arguments import PretrainArguments
    from hf_vssl.train.pretrain import build_optimizer

    optimizer = build_optimizer(PretrainArguments(method="hdc"), model)
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in online_parameters(model)}


def test_momentum_update_follows_the_equation_by_hand():
    model = tiny_model(momentum=0.9).float()
    online = model.heads["stage4"]["temporal"][0].bias
    key = model.momentum_encoder.heads["stage4"]["temporal"][0].bias
    with torch.no_grad():
        online.copy_(torch.arange(online.numel(), dtype=torch.float32))
        key.fill_(10.0)
    running_mean = [m for m in model.momentum_encoder.modules() if hasattr(m, "running_mean")][0].running_mean
    running_before = running_mean.clone()
    model.after_optimizer_step()
    expected = torch.tensor([0.9 * 10.0 + 0.1 * i for i in range(online.numel())])
    torch.testing.assert_close(key, expected, rtol=0, atol=1e-6)
    assert torch.equal(running_mean, running_before)  # buffers are the copy's own, not averaged
    # Every parameter of backbone and heads has its partner in the copy, in the same order.
    pairs = zip(
        model.momentum_encoder.parameters(), [*model.hdc.backbone.parameters(), *model.heads.parameters()]
    )
    assert all(a.shape == b.shape for a, b in pairs)


def test_queues_are_fifo_with_wrap_around_by_hand():
    queue = FeatureQueue(2, 5)
    first = torch.tensor([[1.0, 1], [2, 2], [3, 3]])
    second = torch.tensor([[4.0, 4], [5, 5], [6, 6], [7, 7]])
    queue.enqueue(first)
    assert (int(queue.ptr), int(queue.filled)) == (3, 3)
    queue.enqueue(second)
    # slots 3, 4 take keys 4, 5; keys 6, 7 wrap to slots 0, 1 and overwrite the oldest keys 1, 2.
    assert queue.queue.tolist() == [[6, 6], [7, 7], [3, 3], [4, 4], [5, 5]]
    assert (int(queue.ptr), int(queue.filled)) == (2, 5)
    queue.enqueue(
        torch.tensor([[float(i), i] for i in range(8, 15)])
    )  # more keys than slots: the newest 5 stay
    assert sorted(queue.queue[:, 0].tolist()) == [10, 11, 12, 13, 14]
    assert int(queue.ptr) == (2 + 7) % 5 and queue.queue[int(queue.ptr) - 1, 0] == 14


def test_a_training_forward_enqueues_its_keys_and_an_eval_forward_changes_nothing():
    model = freeze_batch_norm(tiny_model(queue_size=4))
    pixel_values = views(num_videos=3)
    with torch.no_grad():
        keys = model.momentum_encoder.heads["stage3"]["spatial"](
            model.momentum_encoder.backbone(pixel_values[:, 1].transpose(1, 2))[2].mean(dim=(2, 3, 4))
        )
    model(pixel_values)
    model(pixel_values)
    queue = model.queues["stage3"]["spatial"]
    # 3 keys, then 3 more: the second batch's first key fills slot 3, the other two wrap to slots 0 and 1.
    expected = F.normalize(keys, dim=1)
    torch.testing.assert_close(queue.queue, torch.stack([expected[1], expected[2], expected[2], expected[0]]))
    assert (int(queue.ptr), int(queue.filled)) == (2, 4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    model(pixel_values)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_loading_an_inconsistent_queue_is_a_clear_error():
    queue = FeatureQueue(2, 4)
    state = queue.state_dict()
    state["ptr"] = torch.tensor(1)  # two keys held, but the next slot is not the third
    state["filled"] = torch.tensor(2)
    with pytest.raises(ValueError, match="inconsistent"):
        queue.load_state_dict(state)
    state["ptr"] = torch.tensor(4)
    state["filled"] = torch.tensor(4)
    with pytest.raises(ValueError, match="inconsistent"):
        queue.load_state_dict(state)


def test_measured_weights_by_hand():
    model = tiny_model(invariance_floor=0.01)
    with torch.no_grad():
        model.invariance.copy_(torch.tensor([0.2, 0.5, -0.3], dtype=torch.float64))
    # floored at 0.01, then normalised to sum to 3 levels
    expected = torch.tensor([0.2, 0.5, 0.01], dtype=torch.float64) * 3 / 0.71
    torch.testing.assert_close(model.current_level_weights(), expected, rtol=1e-12, atol=1e-12)
    fixed = tiny_model(invariance_weighting="fixed")
    assert fixed.current_level_weights().tolist() == [0.3, 0.5, 1.0]
    # The EMA moves by (1 - m) towards the batch's mean positive cosine: m = 0.9 here.
    model = freeze_batch_norm(tiny_model())
    before = model.invariance.clone()
    output = model(views())
    torch.testing.assert_close(model.invariance, 0.9 * before + 0.1 * output.positive_similarity.mean(0))
    torch.testing.assert_close(output.level_weights, model.current_level_weights())


def test_instance_only_ablation_has_one_level_and_one_subtask():
    model = tiny_model(
        tap_stages=[4], fixed_level_weights=[1.0], invariance_weighting="fixed", spatial_weight=0.0
    )
    assert list(model.heads) == ["stage4"] and list(model.heads["stage4"]) == ["temporal"]
    output = freeze_batch_norm(model)(views())
    assert output.spatial_loss_stage4 is None and output.temporal_loss_stage2 is None
    torch.testing.assert_close(output.loss, output.temporal_loss_stage4)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"tap_stages": [2, 2, 4]}, "tap_stages"),
        ({"invariance_floor": 0.0}, "invariance_floor"),
        ({"spatial_weight": 1.5}, "spatial_weight"),
        ({"batch_norm_splits": 0}, "batch_norm_splits"),
        ({"reversed_anchor_negatives": True, "spatial_weight": 1.0}, "reversed_anchor_negatives"),
    ],
)
def test_bad_objective_settings_are_a_clear_error(overrides, message):
    with pytest.raises(CONFIG_ERRORS, match=message):
        tiny_hdc_config(**overrides)


def test_bad_views_are_a_clear_error():
    with pytest.raises(ValueError, match="3 views"):
        tiny_model()(views()[:, :2])
    with pytest.raises(ValueError, match="multiple"):
        tiny_model(batch_norm_splits=2)(views(num_videos=3))


# --- two processes against one ------------------------------------------------------------------------------------

TERMS = ["loss"] + [f"{s}_loss_stage{stage}" for stage in STAGES for s in ("spatial", "temporal")]


def _prepared_model():
    model = freeze_batch_norm(tiny_model())
    perturb_momentum_copy(model)
    fill_queues(model, 3)
    return model


def _shuffled_model(splits):
    """Batch norm on batch statistics, shuffled across processes, `splits` groups per process."""
    model = tiny_model(batch_norm_splits=splits).train()
    perturb_momentum_copy(model)
    torch.manual_seed(1)  # the first process draws the permutation [1, 3, 2, 0]
    return model


def _two_process_worker(rank):
    model = _prepared_model()
    output = model(views(num_videos=4)[2 * rank : 2 * rank + 2])
    grads = torch.autograd.grad(output.loss, online_parameters(model))
    shuffled = _shuffled_model(splits=1)(views(num_videos=4)[2 * rank : 2 * rank + 2])
    return {
        "terms": {name: mean_over_processes(output[name]) for name in TERMS},
        "grads": [mean_over_processes(g) for g in grads],  # what DDP does with the gradients
        "level_weights": output.level_weights,
        "state": {k: v for k, v in model.state_dict().items() if k.startswith(("queues.", "invariance"))},
        "shuffled_loss": mean_over_processes(shuffled.loss),
    }


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    return run_in_two_processes(_two_process_worker, tmp_path_factory.mktemp("hdc_two_processes"))


def test_two_processes_match_one_process_on_the_joint_batch(two_process_results):
    model = _prepared_model()
    output = model(views(num_videos=4))
    grads = torch.autograd.grad(output.loss, online_parameters(model))
    for result in two_process_results:
        for name in TERMS:
            torch.testing.assert_close(
                result["terms"][name], output[name].detach(), rtol=1e-10, atol=1e-12, msg=name
            )
        for got, want in zip(result["grads"], grads):
            torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-11)
        torch.testing.assert_close(result["level_weights"], output.level_weights, rtol=1e-12, atol=1e-12)
        # Identical queues (and EMA) on every process, equal to one process's after the joint batch.
        for name, value in result["state"].items():
            torch.testing.assert_close(value, model.state_dict()[name], rtol=0, atol=1e-15, msg=name)
    assert int(model.queues["stage2"]["spatial"].filled) == 3 + 4
    # Shuffling BN across two processes (one group each) = one process with two groups on the joint batch.
    shuffled = _shuffled_model(splits=2)(views(num_videos=4)).loss
    for result in two_process_results:
        torch.testing.assert_close(result["shuffled_loss"], shuffled.detach(), rtol=1e-10, atol=1e-12)


# --- construction, loading and the released encoder ---------------------------------------------------------------


def test_the_momentum_copy_starts_equal_and_from_pretrained_restores_training_state(tmp_path):
    model = tiny_model().float()
    online = [*model.hdc.backbone.parameters(), *model.heads.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(model.momentum_encoder.parameters(), online))
    assert all(int(q.filled) == 0 for level in model.queues.values() for q in level.values())
    assert model.base_model is model.hdc

    freeze_batch_norm(model)
    perturb_momentum_copy(model)
    model(views().float()).loss.backward()
    model.after_optimizer_step()
    model.save_pretrained(tmp_path / "pretraining")
    reloaded = hf_vssl.HDCForPreTraining.from_pretrained(tmp_path / "pretraining", dtype=torch.float32)
    state = model.state_dict()
    assert reloaded.state_dict().keys() == state.keys()
    for name, value in reloaded.state_dict().items():
        assert torch.equal(value, state[name]), name

    # The released encoder holds the online backbone only; a pretraining model built from it starts afresh, with
    # a momentum copy equal to the loaded encoder and its new heads.
    model.hdc.save_pretrained(tmp_path / "encoder")
    released = load_file(tmp_path / "encoder" / "model.safetensors")
    assert released.keys() == {f"backbone.{k}" for k in model.hdc.backbone.state_dict()}
    restarted = hf_vssl.HDCForPreTraining.from_pretrained(tmp_path / "encoder", dtype=torch.float32)
    assert all(
        torch.equal(a, b)
        for a, b in zip(restarted.hdc.backbone.parameters(), model.hdc.backbone.parameters())
    )
    online = [*restarted.hdc.backbone.parameters(), *restarted.heads.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(restarted.momentum_encoder.parameters(), online))
    assert all(int(q.filled) == 0 for level in restarted.queues.values() for q in level.values())
    assert torch.equal(restarted.invariance, torch.ones(3))


def test_released_and_pretraining_models_load_through_remote_code(tmp_path, no_hf_vssl_runner):
    model = freeze_batch_norm(tiny_model().float())
    model(views().float())  # some keys in the queues
    model.save_pretrained(tmp_path / "pretraining")
    model.hdc.save_pretrained(tmp_path / "encoder")
    clip = torch.randn(2, 8, 3, 32, 32)
    with torch.no_grad():
        torch.save(
            {"clip": clip, "features": model.hdc.eval()(clip).pooler_output, "state": model.state_dict()},
            tmp_path / "expected.pt",
        )
    no_hf_vssl_runner(
        f"""
        import torch
        from transformers import AutoModel, AutoModelForPreTraining
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        encoder = AutoModel.from_pretrained({str(tmp_path / "encoder")!r}, trust_remote_code=True, dtype=torch.float32)
        assert type(encoder).__name__ == "HDCModel" and type(encoder).__module__.startswith("transformers_modules")
        with torch.no_grad():
            assert torch.equal(encoder.eval()(expected["clip"]).pooler_output, expected["features"])
        pretraining = AutoModelForPreTraining.from_pretrained(
            {str(tmp_path / "pretraining")!r}, trust_remote_code=True, dtype=torch.float32
        )
        assert type(pretraining).__name__ == "HDCForPreTraining"
        for name, value in pretraining.state_dict().items():
            assert torch.equal(value, expected["state"][name]), name
        print("ok")
        """
    )


# --- an exact resume of the training script -----------------------------------------------------------------------

TINY_HDC_RUN = {
    "method": "hdc",
    "model": {
        **TINY_MODEL,
        "num_frames": 8,
        "queue_size": 5,  # not a multiple of the batch: the FIFO wraps inside a push
        "batch_norm_splits": 2,  # shuffling batch norm in effect: its permutations must resume exactly too
    },
    "recipe": {"flip_prob": 0.0},
    "per_device_train_batch_size": 2,
    "num_train_epochs": 2,
    "dataloader_num_workers": 1,
    "shuffle_buffer_size": 8,
    "checkpointing_steps": 2,
    "logging_steps": 1,
}


def test_resume_mid_epoch_reaches_the_same_weights_queues_and_ema_bitwise(tmp_path, tiny_data):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(TINY_HDC_RUN))

    def pretrain(output_dir, *options):
        run_ok([sys.executable, str(PRETRAIN), *run_args(config, tiny_data["train"], output_dir, *options)])

    # 12 videos, batch 2: 6 steps per epoch; the resume starts mid-epoch 0 and the run crosses into epoch 1.
    pretrain(tmp_path / "straight", "--max_steps", "8")
    pretrain(tmp_path / "resumed", "--max_steps", "3")
    pretrain(tmp_path / "resumed", "--max_steps", "8", "--resume_from_checkpoint", "latest")
    straight = final_checkpoint_weights(tmp_path / "straight")
    resumed = final_checkpoint_weights(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    assert any(k.startswith("momentum_encoder.") for k in straight) and "invariance" in straight
    assert int(straight["queues.stage4.temporal.filled"]) == 5
    different = [name for name in straight if not straight[name].equal(resumed[name])]
    assert not different, different
    # The log has each level's weight and positive cosine (the model's training_metrics hook) next to the losses;
    # the measured weights sum to the number of levels.
    records = [
        json.loads(line)
        for line in (tmp_path / "straight" / "logs" / "metrics.jsonl").read_text().splitlines()
    ]
    logged = [r for r in records if "train/loss" in r]
    assert [r["step"] for r in logged] == list(range(1, 9))
    for record in logged:
        weights = [record[f"train/level_weight_stage{s}"] for s in (2, 3, 4)]
        assert sum(weights) == pytest.approx(3.0) and min(weights) > 0
        assert all(-1 <= record[f"train/positive_similarity_stage{s}"] <= 1 for s in (2, 3, 4))
        assert record["train/temporal_loss_stage2"] > 0
    assert logged[0]["train/level_weight_stage2"] != logged[-1]["train/level_weight_stage2"]
    # The released folder is the online encoder alone.
    released = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    assert all(k.startswith("backbone.") for k in released)
    online = {k[len("hdc.") :]: v for k, v in straight.items() if k.startswith("hdc.")}
    assert all(torch.equal(released[k], online[k]) for k in released)
