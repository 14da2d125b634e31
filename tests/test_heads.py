"""Heads, tap adapters and training-state modules of hf_vssl.heads, against loop references."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from hf_vssl.heads import (
    FeatureQueue,
    GradientReversal,
    MotionExcitation,
    PointwiseMLP,
    ProjectionMLP,
    Prototypes,
    gradient_reversal,
    init_module_,
    momentum_update_,
)


def _randomize_batch_norm_(module, generator):
    """Non-trivial affine parameters and running statistics, so that eval-mode references test them."""
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                bn.weight.copy_(torch.rand(bn.weight.shape, generator=generator) + 0.5)
                bn.bias.copy_(torch.randn(bn.bias.shape, generator=generator))
                bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=generator))
                bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=generator) + 0.5)


# ------------------------------------------------------------------------------------------------ MLPs


def test_pointwise_mlp_is_a_per_time_step_mlp():
    head = PointwiseMLP(6, out_dim=4, hidden_dim=5).double()
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    out = head(x)
    assert out.shape == (2, 4, 3)
    w1, b1 = head[0].weight[:, :, 0], head[0].bias
    w2, b2 = head[2].weight[:, :, 0], head[2].bias
    for b in range(2):
        for t in range(3):
            expected = w2 @ torch.relu(w1 @ x[b, :, t] + b1) + b2
            torch.testing.assert_close(out[b, :, t], expected)
    assert set(head.state_dict()) == {
        "0.weight",
        "0.bias",
        "2.weight",
        "2.bias",
    }  # the MLFO `project*` layout
    assert PointwiseMLP(8)[0].out_channels == 8 and PointwiseMLP(8).out_dim == 128
    with pytest.raises(ValueError, match=r"\[B, 6, T\]"):
        head(torch.randn(2, 5, 3, dtype=torch.float64))


@pytest.mark.parametrize("batch_norm", [True, False])
def test_projection_mlp(batch_norm):
    head = ProjectionMLP(6, 5, 3, batch_norm=batch_norm).double()
    _randomize_batch_norm_(head, torch.Generator().manual_seed(0))
    head.eval()
    x = torch.randn(4, 6, dtype=torch.float64)
    hidden = x @ head[0].weight.T + head[0].bias
    if batch_norm:
        bn = head[1]
        hidden = (hidden - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    last = head[-1]
    torch.testing.assert_close(head(x), torch.relu(hidden) @ last.weight.T + last.bias)
    expected_keys = {"0.weight", "0.bias", "3.weight", "3.bias"} if batch_norm else {"0.weight", "0.bias"}
    assert expected_keys <= set(head.state_dict())
    with pytest.raises(ValueError, match=r"\[B, 6\]"):
        head(torch.randn(4, 6, 1, dtype=torch.float64))


def test_prototypes_normalize_and_scores():
    prototypes = Prototypes(dim=8, num_prototypes=5)
    assert prototypes.bias is None and prototypes.weight.shape == (5, 8) and prototypes.num_prototypes == 5
    weight_before = prototypes.weight
    with torch.no_grad():
        prototypes.weight.mul_(3.0)
    prototypes.normalize_()
    assert prototypes.weight is weight_before  # same parameter object: optimizers keep tracking it
    torch.testing.assert_close(prototypes.weight.norm(dim=1), torch.ones(5))
    x = F.normalize(torch.randn(4, 8), dim=1)
    scores = prototypes(x)
    torch.testing.assert_close(scores, x @ prototypes.weight.T)
    assert scores.abs().max() <= 1 + 1e-6  # cosine similarities
    scores.sum().backward()
    assert prototypes.weight.grad is not None


# ------------------------------------------------------------------------------------- motion excitation


def _motion_excitation_reference(block, x, training):
    """Frame-by-frame loops over the MLFO MEBlock equations, with the block's own weights."""
    batch, channels, steps, height, width = x.shape
    reduced_channels = channels // block.reduction

    def batch_norm(values, bn, dims):
        # values [..., C, ...]; normalise per channel over `dims` (batch statistics) or with running statistics.
        shape = [1] * values.ndim
        shape[1] = -1
        if training:
            mean = values.mean(dim=dims, keepdim=True)
            var = values.var(dim=dims, unbiased=False, keepdim=True)
        else:
            mean, var = bn.running_mean.view(shape), bn.running_var.view(shape)
        return (values - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(shape) + bn.bias.view(shape)

    # r_t = BN(conv1x1(x_t)) for every frame; batch statistics are over all frames of all clips.
    r = torch.stack(
        [
            torch.stack([F.conv2d(x[b, :, t][None], block.conv1.weight)[0] for t in range(steps)])
            for b in range(batch)
        ]
    )  # [B, T, C', H, W]
    r = batch_norm(r.reshape(batch * steps, reduced_channels, height, width), block.bn1, (0, 2, 3))
    r = r.reshape(batch, steps, reduced_channels, height, width)
    r_prime = torch.stack(
        [
            torch.stack(
                [
                    F.conv2d(r[b, t][None], block.conv2.weight, padding=1, groups=reduced_channels)[0]
                    for t in range(steps)
                ]
            )
            for b in range(batch)
        ]
    )
    motion = torch.zeros(batch, steps, reduced_channels, dtype=x.dtype)
    for b in range(batch):
        for t in range(steps - 1):
            motion[b, t] = (r_prime[b, t + 1] - r[b, t]).mean(dim=(1, 2))
    excitation = torch.stack(
        [
            torch.stack([block.conv3.weight[:, :, 0, 0] @ motion[b, t] for t in range(steps)])
            for b in range(batch)
        ]
    )  # [B, T, C]
    excitation = batch_norm(excitation.reshape(batch * steps, channels), block.bn3, (0,))
    gate = torch.sigmoid(excitation.reshape(batch, steps, channels)) - 0.5
    out = torch.empty_like(x)
    for b in range(batch):
        for t in range(steps):
            out[b, :, t] = x[b, :, t] + gate[b, t][:, None, None] * x[b, :, t]
    return out


@pytest.mark.parametrize("training", [False, True])
def test_motion_excitation_matches_loop_reference(training):
    generator = torch.Generator().manual_seed(1)
    block = MotionExcitation(channels=32, reduction=16).double()
    _randomize_batch_norm_(block, generator)
    block.train(training)
    x = torch.randn(2, 32, 4, 5, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out = block(x)
    expected = _motion_excitation_reference(block, x_ref, training)
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected)
    weights = torch.randn(out.shape, generator=generator, dtype=torch.float64)
    (grad,) = torch.autograd.grad((out * weights).sum(), x)
    (grad_ref,) = torch.autograd.grad((expected * weights).sum(), x_ref)
    torch.testing.assert_close(grad, grad_ref)


def test_motion_excitation_uses_the_mlfo_parameter_layout():
    block = MotionExcitation(128)
    shapes = {name: tuple(tensor.shape) for name, tensor in block.state_dict().items()}
    assert shapes["conv1.weight"] == (8, 128, 1, 1)
    assert shapes["conv2.weight"] == (8, 1, 3, 3)  # depthwise
    assert shapes["conv3.weight"] == (128, 8, 1, 1)
    assert shapes["bn1.weight"] == (8,) and shapes["bn3.weight"] == (128,)
    assert not any(name.endswith("bias") and name.startswith("conv") for name in shapes)
    assert {name.split(".")[0] for name in shapes} == {"conv1", "bn1", "conv2", "conv3", "bn3"}


def test_motion_excitation_static_clip_and_bad_input():
    block = MotionExcitation(16, reduction=4).eval()
    _randomize_batch_norm_(block, torch.Generator().manual_seed(2))
    static = torch.randn(1, 16, 1, 3, 3).expand(1, 16, 4, 3, 3)
    # The same frame at every step gives the same motion term at every step but the last (zero there).
    out = block(static)
    torch.testing.assert_close(out[:, :, 0], out[:, :, 2])
    assert not torch.allclose(out[:, :, 2], out[:, :, 3])
    with pytest.raises(ValueError, match=r"\[B, 16, T, H, W\]"):
        block(torch.randn(1, 8, 4, 3, 3))
    with pytest.raises(ValueError, match="reduction"):
        MotionExcitation(8, reduction=16)


# -------------------------------------------------------------------------------------- gradient reversal


@pytest.mark.parametrize("strength", [0.0, 0.1, 2.5])
def test_gradient_reversal(strength):
    layer = GradientReversal()
    layer.strength = strength  # schedules set it directly
    x = torch.randn(3, 4, requires_grad=True)
    upstream = torch.randn(3, 4)
    out = layer(x)
    torch.testing.assert_close(out, x)
    (grad,) = torch.autograd.grad(out, x, upstream)
    torch.testing.assert_close(grad, -strength * upstream)
    (grad_fn,) = torch.autograd.grad(gradient_reversal(x, strength), x, upstream)
    torch.testing.assert_close(grad_fn, -strength * upstream)


# ------------------------------------------------------------------------------------------ feature queue


def test_feature_queue_wraps_around_like_a_fifo():
    size, dim = 5, 3
    queue = FeatureQueue(dim, size)
    assert len(queue) == 0 and not queue.valid_mask().any() and queue.valid_keys().shape == (0, dim)
    pushed = []  # every key ever pushed, oldest first
    counter = 0
    for batch in [2, 2, 3, 1, 7, 0, 4]:  # wraps several times; 7 > size keeps only the newest 5
        keys = torch.arange(counter, counter + batch, dtype=torch.float32)[:, None].repeat(1, dim)
        counter += batch
        queue.enqueue(keys)
        pushed.extend(range(counter - batch, counter))
        # Reference: sequential writes into slot (number of keys pushed before) % size.
        expected = torch.zeros(size)
        for index, key in enumerate(pushed):
            expected[index % size] = key
        torch.testing.assert_close(queue.queue[:, 0], expected)
        assert int(queue.ptr) == len(pushed) % size
        assert len(queue) == min(len(pushed), size)
        assert sorted(queue.valid_keys()[:, 0].tolist()) == [float(k) for k in pushed[-size:]]
        torch.testing.assert_close(queue.valid_mask(), torch.arange(size) < min(len(pushed), size))


def test_feature_queue_newest_reads_the_last_pushed_keys_oldest_first():
    size, dim = 5, 2
    queue = FeatureQueue(dim, size)
    pushed = []
    for batch in [2, 2, 3, 1, 7, 4]:  # storage order leaves age order once the queue wraps
        keys = torch.arange(len(pushed), len(pushed) + batch, dtype=torch.float32)[:, None].repeat(1, dim)
        queue.enqueue(keys)
        pushed.extend(keys[:, 0].tolist())
        for count in (-1, 0, 1, 3, size, size + 2):
            kept = max(min(count, len(pushed), size), 0)
            assert queue.newest(count)[:, 0].tolist() == pushed[len(pushed) - kept :]
            # the same keys from a window of fixed size and its mask (no host read of `filled`)
            window, valid = queue.newest_window(count)
            assert window.shape[0] == valid.shape[0] == max(min(count, size), 0)
            assert window[valid][:, 0].tolist() == pushed[len(pushed) - kept :]
            assert valid.tolist() == sorted(valid.tolist())  # the missing rows are the oldest


def test_feature_queue_buffers_detach_cast_and_clear():
    queue = FeatureQueue(4, 6)
    assert set(queue.state_dict()) == {"queue", "ptr", "filled"}  # persistent: saved with the model
    assert torch.equal(queue.queue, torch.zeros(6, 4))  # deterministic init
    keys = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    queue.enqueue(keys)
    assert queue.queue.dtype == torch.float32 and not queue.queue.requires_grad
    torch.testing.assert_close(queue.valid_keys(), keys.detach().float())
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        queue.enqueue(torch.randn(2, 5))
    queue.clear()
    assert len(queue) == 0 and int(queue.ptr) == 0 and not queue.queue.any()


def test_feature_queue_reset_keeps_loaded_buffers():
    """`reset()` goes through transformers.initialization: tensors loaded by from_pretrained are kept."""
    queue = FeatureQueue(2, 3)
    queue.enqueue(torch.ones(2, 2))
    for buffer in (queue.queue, queue.ptr, queue.filled):
        buffer._is_hf_initialized = True  # what from_pretrained flags on loaded tensors
    queue.reset()
    assert len(queue) == 2 and queue.queue.sum() == 4
    fresh = FeatureQueue(2, 3)
    fresh.enqueue(torch.ones(2, 2))
    fresh.reset()
    assert len(fresh) == 0 and int(fresh.ptr) == 0 and not fresh.queue.any()


def test_feature_queue_survives_a_pretrained_round_trip(tmp_path):
    from transformers import PretrainedConfig, PreTrainedModel

    class TinyConfig(PretrainedConfig):
        model_type = "hf_vssl_tiny_queue_test"

    class TinyModel(PreTrainedModel):
        config_class = TinyConfig
        base_model_prefix = "tiny"

        def __init__(self, config):
            super().__init__(config)
            self.head = ProjectionMLP(3, 4, 2)
            self.queue = FeatureQueue(2, 4)
            self.post_init()

        def _init_weights(self, module):
            if not init_module_(module):
                super()._init_weights(module)

    model = TinyModel(TinyConfig())
    model.queue.enqueue(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    model.save_pretrained(tmp_path)
    loaded = TinyModel.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded.queue.queue, model.queue.queue)
    assert int(loaded.queue.ptr) == 3 and len(loaded.queue) == 3
    torch.testing.assert_close(loaded.head[0].weight, model.head[0].weight)
    assert len(TinyModel(TinyConfig()).queue) == 0


# --------------------------------------------------------------------------------------- momentum update


def test_momentum_update_matches_loop():
    generator = torch.Generator().manual_seed(3)
    target = [
        torch.randn(3, 2, generator=generator),
        torch.randn(5, generator=generator, dtype=torch.float64),
    ]
    online = [
        torch.randn(3, 2, generator=generator),
        torch.randn(5, generator=generator, dtype=torch.float64),
    ]
    expected = [0.9 * t + 0.1 * o for t, o in zip(target, online)]
    momentum_update_(target, online, 0.9)
    for got, want in zip(target, expected):
        torch.testing.assert_close(got, want)


def test_momentum_update_on_modules_and_bad_input():
    online, target = nn.Linear(4, 3), nn.Linear(4, 3)
    for p in target.parameters():
        p.requires_grad_(False)
    before = [p.clone() for p in target.parameters()]
    momentum_update_(target.parameters(), online.parameters(), 0.99)
    for got, old, new in zip(target.parameters(), before, online.parameters()):
        torch.testing.assert_close(got, 0.99 * old + 0.01 * new)
    momentum_update_(target.parameters(), online.parameters(), 0.0)  # m = 0 copies
    for got, new in zip(target.parameters(), online.parameters()):
        torch.testing.assert_close(got, new)
    with pytest.raises(ValueError, match="as many"):
        momentum_update_(list(target.parameters())[:1], online.parameters(), 0.9)
    with pytest.raises(ValueError, match="momentum"):
        momentum_update_(target.parameters(), online.parameters(), 1.5)
    with pytest.raises(ValueError, match="shape"):
        momentum_update_([torch.zeros(2)], [torch.zeros(3)], 0.5)


# ------------------------------------------------------------------------------------------ init_module_


def test_init_module_restores_pytorch_defaults_and_skips_loaded_tensors():
    head = PointwiseMLP(16, out_dim=8)
    conv = head[0]
    with torch.no_grad():
        conv.weight.fill_(7.0)
        conv.bias.fill_(7.0)
        head[2].weight.fill_(7.0)
    head[2].weight._is_hf_initialized = True  # loaded from a checkpoint
    handled = [init_module_(module) for module in head.modules()]
    assert handled == [False, True, False, True]  # the Sequential itself and ReLU are not handled
    bound = 1 / math.sqrt(16)  # kaiming_uniform(a=sqrt(5)) and the bias bound are both 1/sqrt(fan_in)
    assert conv.weight.abs().max() <= bound and conv.weight.std() > bound / 4
    assert conv.bias.abs().max() <= bound
    assert torch.all(head[2].weight == 7.0)
    bn = nn.BatchNorm1d(4)
    _randomize_batch_norm_(bn, torch.Generator().manual_seed(4))
    assert init_module_(bn)
    assert torch.equal(bn.weight, torch.ones(4)) and torch.equal(bn.running_var, torch.ones(4))
    assert init_module_(Prototypes(4, 3)) and not init_module_(GradientReversal())
