"""ctrlaug pretraining: every term against a slow float64 reference written from METHODS.md §2 (values and each
term's gradient), region weights on hand-made tubes, the reversal layer's sign and ramp, two processes against one,
and the hand-over of the encoder (also through remote code)."""

import numpy as np
import pytest
import torch

import hf_vssl
from hf_vssl.heads import tube_cell_weights, tube_iou, tube_pool

from .ctrlaug_reference import cell_weights, iou_3d, reference_terms, region_feature
from .training_runs import TINY_MODEL
from .two_processes import mean_over_processes, run_in_two_processes

TERMS = ["loss", "instance_loss", "region_loss", "mi_loss", "order_loss"]


def tiny_ctrlaug_config(**overrides):
    return hf_vssl.CtrlAugConfig(**{"backbone": "r3d", **TINY_MODEL, **overrides})


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return hf_vssl.CtrlAugForPreTraining(tiny_ctrlaug_config(**overrides)).double()


def views(num_videos=3, num_local=2, seed=1, num_frames=16):
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(
        num_videos, 1 + num_local, num_frames, 3, 32, 32, generator=generator, dtype=torch.float64
    )
    # Tubes inside G: time windows of a quarter of G's span, boxes of 0.3-0.7 of its side, random places.
    start = torch.rand(num_videos, num_local, generator=generator, dtype=torch.float64) * 0.75
    size = 0.3 + 0.4 * torch.rand(num_videos, num_local, 2, generator=generator, dtype=torch.float64)
    corner = torch.rand(num_videos, num_local, 2, generator=generator, dtype=torch.float64) * (1 - size)
    tubes = torch.cat([start[..., None], start[..., None] + 0.25, corner, corner + size], dim=-1)
    return pixel_values, tubes


# --- every term against the reference -----------------------------------------------------------------------------


def _encoder_parameter_names(model):
    return {name for name, _ in model.named_parameters() if name.startswith("ctrlaug.")}


@pytest.mark.parametrize(
    "overrides, epoch, num_local",
    [
        ({}, 4, 2),  # mid warm-up: strength 0.04
        ({"region_stage": 3, "order_local_steps": 3, "gather_gradient": "all"}, 20, 3),
    ],
)
def test_every_term_matches_the_reference_in_value_and_gradient(overrides, epoch, num_local):
    model = tiny_model(**overrides)
    model.train()
    model.set_epoch(epoch)
    strength = model.gradient_reversal.strength
    assert strength == pytest.approx(0.1 * min(1.0, epoch / 10))
    pixel_values, tubes = views(num_local=num_local)
    names = [name for name, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    encoder = _encoder_parameter_names(model)

    expected = reference_terms(model, pixel_values, tubes)
    output = model(pixel_values, tubes=tubes)
    for name in TERMS:
        torch.testing.assert_close(output[name], expected[name], rtol=1e-9, atol=1e-10, msg=name)
    # Gradients of each term separately, so that a wrong gradient path in one term cannot hide in the total.
    for term in TERMS[1:]:
        got = torch.autograd.grad(output[term], params, retain_graph=True, allow_unused=True)
        want = torch.autograd.grad(expected[term], params, retain_graph=True, allow_unused=True)
        for name, param, g, w in zip(names, params, got, want):
            g = torch.zeros_like(param) if g is None else g
            w = torch.zeros_like(param) if w is None else w
            if term == "mi_loss" and name in encoder:
                # Through the reversal layer: the encoder gets -strength times the critic's gradient.
                w = -strength * w
            torch.testing.assert_close(g, w, rtol=1e-7, atol=1e-10, msg=f"{term} / {name}")


def test_reversal_layer_sign_and_ramp():
    model = tiny_model(gradient_reversal_strength=0.5, gradient_reversal_warmup_epochs=4, num_frames=8)
    strengths = []
    for epoch in (0, 1, 2, 4, 9):
        model.set_epoch(epoch)
        strengths.append(model.gradient_reversal.strength)
    assert strengths == [0.0, 0.125, 0.25, 0.5, 0.5]
    pixel_values, tubes = views(num_videos=2, num_frames=8)
    critic = list(model.critic_high.parameters()) + list(model.critic_low.parameters())
    encoder = list(model.ctrlaug.parameters())
    grads = {}
    for epoch in (0, 2, 4):
        model.set_epoch(epoch)
        mi = model(pixel_values, tubes=tubes).mi_loss
        grads[epoch] = torch.autograd.grad(mi, critic + encoder, allow_unused=True)
    zeros = [torch.zeros_like(p) for p in encoder]
    enc = {e: [z if g is None else g for g, z in zip(grads[e][len(critic) :], zeros)] for e in grads}
    # Epoch 0: the critic learns, the encoder gets nothing; later the encoder's gradient scales with the ramp.
    assert all(g.abs().sum() > 0 for g in grads[0][: len(critic)])
    assert all(g.abs().sum() == 0 for g in enc[0])
    for g2, g4 in zip(enc[2], enc[4]):
        torch.testing.assert_close(g4, 2 * g2, rtol=1e-9, atol=1e-14)
    assert sum(g.abs().sum() for g in enc[4]) > 0
    # The critic's gradient does not depend on the strength.
    for g0, g4 in zip(grads[0][: len(critic)], grads[4][: len(critic)]):
        torch.testing.assert_close(g0, g4, rtol=1e-12, atol=1e-14)


def test_the_critic_maximises_the_bound_and_the_encoder_is_pushed_to_lower_it():
    """A few optimizer steps on the total loss raise the critic's bound with the encoder frozen; with the critic
    frozen and full strength, the encoder's steps lower it."""
    pixel_values, tubes = views(num_videos=4, num_frames=8)
    model = tiny_model(
        num_frames=8,
        use_instance=False,
        use_region=False,
        use_order=False,
        mi_weight=1.0,
        gradient_reversal_warmup_epochs=0,
        gradient_reversal_strength=1.0,
    )
    model.eval()  # batch norm in inference mode: only the parameters move
    critic = list(model.critic_high.parameters()) + list(model.critic_low.parameters())

    def bound():
        with torch.no_grad():
            return -model(pixel_values, tubes=tubes).mi_loss.item()

    for trained, frozen in (
        (critic, list(model.ctrlaug.parameters())),
        (list(model.ctrlaug.parameters()), critic),
    ):
        optimizer = torch.optim.SGD(trained, lr=0.05)
        before = bound()
        for _ in range(3):
            model(pixel_values, tubes=tubes).loss.backward()
            for p in frozen:
                p.grad = None
            optimizer.step()
            optimizer.zero_grad()
        after = bound()
        if trained is critic:
            assert after > before + 1e-3, (before, after)
        else:
            assert after < before - 1e-4, (before, after)


# --- region geometry on hand-made tubes ---------------------------------------------------------------------------


def test_region_weights_of_a_tube_covering_exactly_one_cell():
    grid = (2, 4, 4)
    tube = torch.tensor(
        [[[0.5, 1.0, 0.25, 0.5, 0.5, 0.75]]], dtype=torch.float64
    )  # t cell 1, x cell 1, y cell 2
    weights = tube_cell_weights(tube, grid)[0, 0]
    expected = torch.zeros(grid, dtype=torch.float64)
    expected[1, 2, 1] = 1.0
    torch.testing.assert_close(weights, expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(weights, cell_weights(tube[0, 0], grid), rtol=0, atol=1e-15)
    feature_map = torch.randn(1, 5, *grid, dtype=torch.float64)
    torch.testing.assert_close(tube_pool(feature_map, tube)[0, 0], feature_map[0, :, 1, 2, 1])


def test_region_weights_of_a_tube_covering_half_a_cell():
    grid = (2, 4, 4)
    # Half of cell x=1 (0.25..0.375), all of y=0, half of time cell 0.
    tube = torch.tensor([[[0.0, 0.25, 0.25, 0.0, 0.375, 0.25]]], dtype=torch.float64)
    weights = tube_cell_weights(tube, grid)[0, 0]
    expected = torch.zeros(grid, dtype=torch.float64)
    expected[0, 0, 1] = 0.25  # half in x times half in t
    torch.testing.assert_close(weights, expected, rtol=0, atol=1e-15)
    # Straddling two cells: weights 0.5 and 1.0 in x, the region is their weighted average.
    tube = torch.tensor([[[0.0, 1.0, 0.125, 0.0, 0.5, 0.25]]], dtype=torch.float64)
    weights = tube_cell_weights(tube, grid)[0, 0]
    assert weights[0, 0, :].tolist() == [0.5, 1.0, 0.0, 0.0] and weights[1, 0, :].tolist() == [
        0.5,
        1.0,
        0.0,
        0.0,
    ]
    feature_map = torch.randn(1, 3, *grid, dtype=torch.float64)
    expected_region = (0.5 * feature_map[0, :, :, 0, 0] + feature_map[0, :, :, 0, 1]).sum(dim=-1) / 3.0
    torch.testing.assert_close(tube_pool(feature_map, tube)[0, 0], expected_region)
    torch.testing.assert_close(tube_pool(feature_map, tube)[0, 0], region_feature(feature_map[0], tube[0, 0]))


def test_region_of_a_flipped_global_view():
    """The recipe's tubes are flip-corrected: the same draws with G flipped give the mirrored box, and pooling the
    mirrored map over it gives the same region feature."""
    from hf_vssl.data.recipes import CtrlAugViews
    from hf_vssl.video_decoding import VideoInfo

    info = VideoInfo(num_frames=96, fps=25.0, height=64, width=80)
    plans = []
    for flip in (0.0, 1.0):
        recipe = CtrlAugViews(clip_length=8, output_size=(32, 32), global_flip_prob=flip, local_flip_prob=0.0)
        plans.append(recipe.plan(info, recipe.geometry_for(info), np.random.default_rng(3)))
    plain, flipped = (torch.from_numpy(p.extras["tubes"]).double() for p in plans)
    assert not plans[0].flips[0] and plans[1].flips[0]
    torch.testing.assert_close(flipped[:, [0, 1, 3, 5]], plain[:, [0, 1, 3, 5]])
    torch.testing.assert_close(flipped[:, 2], 1 - plain[:, 4], rtol=0, atol=1e-6)
    torch.testing.assert_close(flipped[:, 4], 1 - plain[:, 2], rtol=0, atol=1e-6)
    feature_map = torch.randn(1, 4, 2, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(
        tube_pool(feature_map.flip(-1), flipped[None]),
        tube_pool(feature_map, plain[None]),
        rtol=1e-5,
        atol=1e-6,
    )


def test_region_weights_and_iou_match_the_reference_on_random_tubes():
    _, tubes = views(num_videos=2, num_local=3)
    weights = tube_cell_weights(tubes, (3, 5, 4))
    ious = tube_iou(tubes, tubes)
    for i in range(2):
        for k in range(3):
            torch.testing.assert_close(
                weights[i, k], cell_weights(tubes[i, k], (3, 5, 4)), rtol=0, atol=1e-14
            )
            for m in range(3):
                assert ious[i, k, m].item() == pytest.approx(iou_3d(tubes[i, k], tubes[i, m]), abs=1e-14)
    assert torch.allclose(ious.diagonal(dim1=1, dim2=2), torch.ones(2, 3, dtype=torch.float64))


# --- switches and inputs ------------------------------------------------------------------------------------------


def test_switches_leave_the_instance_baseline():
    model = tiny_model(use_region=False, use_mi=False, use_order=False)
    pixel_values, _ = views()
    output = model(pixel_values)  # no geometry needed
    assert [name for name in TERMS if getattr(output, name) is not None] == ["loss", "instance_loss"]
    torch.testing.assert_close(output.loss, output.instance_loss)
    assert {name.split(".")[0] for name, _ in model.named_parameters()} == {"ctrlaug", "instance_head"}


@pytest.mark.parametrize("term", ["region", "mi", "order"])
def test_each_term_alone_builds_only_its_heads(term):
    heads = {
        "region": {"region_local_head", "region_global_head"},
        "mi": {"critic_high", "critic_low"},
        "order": {"order_head"},
    }
    switches = {f"use_{t}": t == term for t in heads} | {"use_instance": False}
    model = tiny_model(**switches)
    output = model(*views())
    assert [name for name in TERMS if getattr(output, name) is not None] == ["loss", f"{term}_loss"]
    assert {name.split(".")[0] for name, _ in model.named_parameters()} == {"ctrlaug"} | heads[term]
    output.loss.backward()
    # Nothing unused in a DDP step (the order term alone at stage 3 leaves stage 4 out, as its config field says).
    unused = {name for name, p in model.named_parameters() if p.grad is None}
    assert all(name.startswith("ctrlaug.backbone.stages.3") for name in unused) and (
        term == "order" or not unused
    )


def test_missing_or_misshapen_inputs_are_a_clear_error():
    model = tiny_model()
    pixel_values, tubes = views()
    with pytest.raises(ValueError, match="1 \\+ K views"):
        model(pixel_values[:, 0])
    with pytest.raises(ValueError, match="tubes"):
        model(pixel_values)
    with pytest.raises(ValueError, match="tubes"):
        model(pixel_values, tubes=tubes[:, :1])


def test_the_recipes_batch_trains_the_model():
    """The recipe's output (views, tubes, global span) goes straight into the model, as the training loop does."""
    from hf_vssl.data.recipes import CtrlAugViews

    recipe = CtrlAugViews(clip_length=8, output_size=(32, 32), num_local_clips=3)
    assert recipe.model_input_names == ("pixel_values", "tubes")
    model = tiny_model(num_frames=8).float()
    from hf_vssl.video_decoding import VideoInfo

    info = VideoInfo(num_frames=64, fps=25.0, height=48, width=48)
    tubes = torch.stack(
        [
            torch.from_numpy(
                recipe.plan(info, recipe.geometry_for(info), np.random.default_rng(s)).extras["tubes"]
            )
            for s in range(2)
        ]
    )
    output = model(torch.randn(2, 4, 8, 3, 32, 32), tubes=tubes, global_span=torch.tensor([[0.0, 64.0]] * 2))
    assert torch.isfinite(output.loss) and output.order_loss is not None


# --- two processes against one ------------------------------------------------------------------------------------

GATHER_GRADIENTS = ("all", "local")


def _single_process_model(**overrides):
    model = tiny_model(**overrides)
    model.eval()  # batch norm: the same statistics in one process and in two
    model.set_epoch(5)
    return model


def _loss_and_gradients(model, pixel_values, tubes):
    output = model(pixel_values, tubes=tubes)
    grads = torch.autograd.grad(output.loss, list(model.parameters()))
    return output, [g.detach() for g in grads]


def _two_process_worker(rank):
    results = {}
    pixel_values, tubes = views(num_videos=4)
    shard = slice(2 * rank, 2 * rank + 2)
    for mode in GATHER_GRADIENTS:
        model = _single_process_model(gather_gradient=mode)
        output, grads = _loss_and_gradients(model, pixel_values[shard], tubes[shard])
        results[mode] = {
            "grads": [mean_over_processes(g) for g in grads],
            "terms": {name: mean_over_processes(output[name]) for name in TERMS},
        }
    return results


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    return run_in_two_processes(_two_process_worker, tmp_path_factory.mktemp("ctrlaug_two_processes"))[0]


@pytest.mark.parametrize("mode", GATHER_GRADIENTS)
def test_two_processes_match_one_process_on_the_global_batch(two_process_results, mode):
    """Every term in value with either gather; the DDP gradients too with `gather_gradient="all"`."""
    two = two_process_results[mode]
    model = _single_process_model(gather_gradient=mode)
    output, grads = _loss_and_gradients(model, *views(num_videos=4))
    for name in TERMS:
        torch.testing.assert_close(
            two["terms"][name], output[name].detach(), rtol=1e-10, atol=1e-12, msg=name
        )
    if mode == "all":
        for got, want in zip(two["grads"], grads):
            torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-11)
    else:
        assert not all(torch.allclose(got, want, rtol=1e-4) for got, want in zip(two["grads"], grads))


# --- hand-over ----------------------------------------------------------------------------------------------------


def test_pretrained_encoder_hands_over_and_loads_through_remote_code(tmp_path, no_hf_vssl_runner):
    model = tiny_model().float().eval()
    model.save_pretrained(tmp_path / "pretraining")
    encoder = hf_vssl.CtrlAugModel.from_pretrained(tmp_path / "pretraining", dtype=torch.float32).eval()
    clip = torch.randn(1, 16, 3, 32, 32)
    with torch.no_grad():
        expected = model.ctrlaug(clip).pooler_output
        torch.testing.assert_close(encoder(clip).pooler_output, expected, rtol=0, atol=0)
    # The released folder: model.ctrlaug saved as CtrlAugModel, loaded with hf_vssl blocked.
    model.ctrlaug.save_pretrained(tmp_path / "release")
    torch.save({"clip": clip, "features": expected}, tmp_path / "release" / "expected.pt")
    reloaded = hf_vssl.CtrlAugForPreTraining.from_pretrained(tmp_path / "pretraining", dtype=torch.float32)
    assert set(reloaded.state_dict()) == set(model.state_dict())
    no_hf_vssl_runner(
        f"""
        import torch
        from transformers import AutoModel
        directory = {str(tmp_path / "release")!r}
        expected = torch.load(directory + "/expected.pt")
        encoder = AutoModel.from_pretrained(directory, trust_remote_code=True, dtype=torch.float32).eval()
        assert type(encoder).__name__ == "CtrlAugModel", type(encoder)
        assert type(encoder).__module__.startswith("transformers_modules"), type(encoder).__module__
        with torch.no_grad():
            assert torch.equal(encoder(expected["clip"]).pooler_output, expected["features"])
        print("ok")
        """
    )
