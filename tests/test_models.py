"""The foundation: backbones, configs, encoders and classifiers of every method, saved and loaded every way users do."""

import json

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError
from transformers import AutoConfig, AutoModel, AutoModelForVideoClassification

import hf_vssl
from hf_vssl.backbones import BACKBONE_LAYOUTS, VideoResNet, convert_torchvision_state_dict

from . import torchvision_video_resnet as tv
from .conftest import tiny_config

METHODS = sorted(hf_vssl.METHODS)
LAYOUTS = sorted(BACKBONE_LAYOUTS)
CONFIG_ERRORS = (ValueError, StrictDataclassClassValidationError, StrictDataclassFieldValidationError)


def _clip(batch=2, frames=8, size=32, seed=0):
    return torch.randn(batch, frames, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --- backbones ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layout, reference, expected",
    [("r3d", tv.r3d_18, 33_371_472), ("r2plus1d", tv.r2plus1d_18, 31_505_325)],
)
def test_parameter_counts_equal_torchvision(layout, reference, expected):
    # torchvision's published counts (R3D_18_Weights / R2Plus1D_18_Weights "num_params") include a 400-way fc.
    ours = sum(p.numel() for p in VideoResNet(layout).parameters()) + 512 * 400 + 400
    assert ours == expected
    assert sum(p.numel() for p in reference().parameters()) == expected


@pytest.mark.parametrize("layout, reference", [("r3d", tv.r3d_18), ("r2plus1d", tv.r2plus1d_18)])
def test_torchvision_checkpoint_converts_one_to_one(layout, reference):
    torch.manual_seed(0)
    source = reference().eval()
    # Non-trivial BN statistics, so that a swapped norm would show in the outputs.
    for module in source.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.1, 0.1)
    state_dict = source.state_dict()
    converted = convert_torchvision_state_dict(state_dict, layout)
    ours = VideoResNet(layout).eval()
    assert set(converted) == set(ours.state_dict())
    assert len(converted) == len(state_dict) - 2  # fc.weight and fc.bias stay behind
    ours.load_state_dict(converted, strict=True)
    clip = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        for expected, got in zip(source.features(clip), ours(clip)):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_torchvision_conversion_rejects_foreign_keys():
    state_dict = tv.r3d_18().state_dict()
    with pytest.raises(KeyError, match="not part of a torchvision VideoResNet"):
        convert_torchvision_state_dict({**state_dict, "head.proj.weight": torch.zeros(1)}, "r3d")
    with pytest.raises(KeyError):
        convert_torchvision_state_dict(tv.r2plus1d_18().state_dict(), "r3d")


@pytest.mark.parametrize("layout", LAYOUTS)
def test_feature_info_describes_stage_outputs(layout):
    backbone = VideoResNet(layout, embedding_size=8, hidden_sizes=(8, 16, 32, 64), depths=(1, 1, 1, 1))
    clip = torch.randn(1, 3, 16, 112, 112)
    for info, stage in zip(backbone.feature_info, backbone(clip)):
        t, h, w = info.stride
        assert stage.shape[1:] == (info.num_channels, 16 // t, -(-112 // h), -(-112 // w))


@pytest.mark.parametrize(
    "hidden_sizes, depths, message",
    [
        ((8, 16, 32), (1, 1, 1), "one entry per stage"),
        ((8, 16, 32, 64), (1, 1, 1), "one entry per stage"),
        ((8, 16, 32, 64, 128), (1, 1, 1, 1, 1), "one entry per stage"),
        ((8, 16, 32, 64), (1, 0, 1, 1), "at least one block"),
    ],
)
def test_backbone_rejects_stages_that_feature_info_could_not_describe(hidden_sizes, depths, message):
    with pytest.raises(ValueError, match=message):
        VideoResNet("r3d", embedding_size=8, hidden_sizes=hidden_sizes, depths=depths)


def test_mlfo_layout_matches_the_authors_shapes():
    # METHODS.md §1: for a 16x112x112 clip, stage2 128x8x14x14, stage3 256x4x7x7, stage4 512x2x4x4.
    stages = VideoResNet("r3d_hara")(torch.randn(1, 3, 16, 112, 112))
    assert [tuple(s.shape[1:]) for s in stages[1:]] == [(128, 8, 14, 14), (256, 4, 7, 7), (512, 2, 4, 4)]


# --- configs ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"backbone": "resnet50"}, "Unknown backbone"),
        ({"hidden_sizes": [8, 16, 0, 64]}, "hidden_sizes"),
        ({"depths": [1, 1, -1, 1]}, "depths"),
        ({"embedding_size": 0}, "embedding_size"),
        ({"num_frames": 4}, "temporal stride"),
        ({"image_size": 8}, "spatial stride"),
        ({"hidden_sizes": [8, 16, 32]}, "one entry per stage"),
        ({"temperature": 0}, "temperature"),
        ({"num_frames": "16"}, "num_frames"),
    ],
)
def test_bad_config_values_fail_at_creation(method, overrides, message):
    with pytest.raises(CONFIG_ERRORS, match=message):
        tiny_config(method, **overrides)


@pytest.mark.parametrize(
    "method, overrides, message",
    [
        ("mlfo", {"level_weights": [1.0, 0.5]}, "level_weights"),
        ("mlfo", {"graph_threshold": 1.5}, "graph_threshold"),
        ("mlfo", {"use_prototypes": False}, "use_graph"),
        ("ctrlaug", {"region_stage": 2}, "region_stage"),
        ("ctrlaug", {"gather_gradient": "some"}, "gather_gradient"),
        ("ctrlaug", {"gradient_reversal_strength": -0.1}, "gradient_reversal_strength"),
        (
            "ctrlaug",
            {"use_instance": False, "use_region": False, "use_mi": False, "use_order": False},
            "At least one",
        ),
        ("hdc", {"invariance_weighting": "learned"}, "invariance_weighting"),
        ("hdc", {"tap_stages": [2, 5]}, "tap_stages"),
        ("hdc", {"momentum": 1.5}, "momentum"),
    ],
)
def test_bad_method_hyper_parameters_fail_at_creation(method, overrides, message):
    with pytest.raises(CONFIG_ERRORS, match=message):
        tiny_config(method, **overrides)


@pytest.mark.parametrize("auto_class", [AutoModel, AutoModelForVideoClassification])
@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"hidden_sizes": [8, 16, 16], "depths": [1, 1, 1]}, "one entry per stage"),
        ({"num_frames": 0}, "num_frames"),
        ({"classifier_dropout": 2.0}, "classifier_dropout"),
    ],
)
def test_config_overrides_at_load_are_validated(tmp_path, auto_class, overrides, message):
    # from_pretrained sets overrides on the loaded config without running its validators.
    hf_vssl.MLFOModel(tiny_config("mlfo")).save_pretrained(tmp_path)
    with pytest.raises(CONFIG_ERRORS, match=message):
        auto_class.from_pretrained(tmp_path, **overrides)


@pytest.mark.parametrize("method", METHODS)
def test_config_changed_after_creation_is_validated_when_a_model_is_built(method):
    config = tiny_config(method)
    config.hidden_sizes, config.depths = [8, 16, 16], [1, 1, 1]
    spec = hf_vssl.METHODS[method]
    for model_class in (spec.model, spec.classifier, spec.pretraining):
        if model_class is not None:
            with pytest.raises(CONFIG_ERRORS, match="one entry per stage"):
                model_class(config)


def test_method_defaults_follow_the_specification():
    mlfo = hf_vssl.MLFOConfig()
    assert (mlfo.backbone, mlfo.num_prototypes, mlfo.graph_start_epoch, mlfo.level_weights) == (
        "r3d_hara",
        1000,
        20,
        [1.0, 0.5, 0.3],
    )
    assert (mlfo.sinkhorn_epsilon, mlfo.sinkhorn_iterations, mlfo.logit_queue_size, mlfo.temperature) == (
        0.05,
        3,
        1024,
        0.07,
    )
    ctrlaug = hf_vssl.CtrlAugConfig()
    assert (
        ctrlaug.order_weight,
        ctrlaug.mi_weight,
        ctrlaug.region_stage,
        ctrlaug.gradient_reversal_strength,
    ) == (
        1.0,
        0.1,
        4,
        0.1,
    )
    assert not hasattr(ctrlaug, "num_local_clips")  # view sampling lives in the recipe only
    hdc = hf_vssl.HDCConfig()
    assert (hdc.tap_stages, hdc.momentum, hdc.queue_size, hdc.spatial_weight) == (
        [2, 3, 4],
        0.999,
        16384,
        0.5,
    )


# --- encoders and classifiers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_encoder_outputs(method):
    config = tiny_config(method)
    model = hf_vssl.METHODS[method].model(config).eval()
    out = model(_clip(), output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, 64, 1, 2, 2)
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state.mean(dim=(2, 3, 4)))
    assert [h.shape[1] for h in out.hidden_states] == [8, 16, 32, 64]
    assert model(_clip(), return_dict=False)[0].shape == out.last_hidden_state.shape
    # Feature extraction works at other clip lengths and resolutions than the training ones.
    assert model(_clip(batch=1, frames=24, size=48)).pooler_output.shape == (1, 64)
    with pytest.raises(ValueError, match=r"\[batch, frames, channels, height, width\]"):
        model(torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("method", METHODS)
def test_classifier_loss_and_logits(method):
    config = tiny_config(method, id2label={0: "left", 1: "right", 2: "up"})
    model = hf_vssl.METHODS[method].classifier(config)
    out = model(_clip(), labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 2])))
    out.loss.backward()
    assert model.classifier.weight.grad is not None
    assert getattr(model, config.model_type) is model.base_model


def _save_both(tmp_path, method, layout):
    config = tiny_config(method, layout, id2label={0: "left", 1: "right"})
    torch.manual_seed(0)
    classifier = hf_vssl.METHODS[method].classifier(config).eval()
    directory = tmp_path / f"{method}-{layout}"
    classifier.save_pretrained(directory)
    return classifier, directory


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("method", METHODS)
def test_save_and_load_through_auto_classes(tmp_path, method, layout):
    classifier, directory = _save_both(tmp_path, method, layout)
    assert (directory / "model.safetensors").exists()
    assert not list(directory.glob("*.bin"))
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == method and config["backbone"] == layout
    assert {"AutoConfig", "AutoModel", "AutoModelForVideoClassification"} <= set(config["auto_map"])
    assert isinstance(AutoConfig.from_pretrained(directory), hf_vssl.METHODS[method].config)

    clip = _clip()
    with torch.no_grad():
        expected_logits = classifier(clip).logits
        expected_features = classifier.base_model(clip).pooler_output
        reloaded = AutoModelForVideoClassification.from_pretrained(directory, dtype=torch.float32)
        encoder = AutoModel.from_pretrained(directory, dtype=torch.float32)
        assert (
            type(reloaded) is hf_vssl.METHODS[method].classifier
            and type(encoder) is hf_vssl.METHODS[method].model
        )
        torch.testing.assert_close(reloaded(clip).logits, expected_logits, rtol=0, atol=0)
        torch.testing.assert_close(encoder(clip).pooler_output, expected_features, rtol=0, atol=0)


def test_remote_code_loads_without_hf_vssl(tmp_path, no_hf_vssl_runner):
    """Every method x layout loads with trust_remote_code alone, in a process where hf_vssl cannot be imported."""
    cases = []
    for method in METHODS:
        for layout in LAYOUTS:
            classifier, directory = _save_both(tmp_path, method, layout)
            clip = _clip(seed=len(cases))
            with torch.no_grad():
                torch.save(
                    {
                        "clip": clip,
                        "logits": classifier(clip).logits,
                        "features": classifier.base_model(clip).pooler_output,
                    },
                    directory / "expected.pt",
                )
            for code_file in (
                "modeling_vssl.py",
                "backbones.py",
                f"configuration_{method}.py",
                "configuration_vssl.py",
            ):
                assert (directory / code_file).exists(), code_file
            cases.append(str(directory))
    no_hf_vssl_runner(
        f"""
        import torch
        from transformers import AutoModel, AutoModelForVideoClassification
        for directory in {cases!r}:
            expected = torch.load(directory + "/expected.pt")
            classifier = AutoModelForVideoClassification.from_pretrained(directory, trust_remote_code=True, dtype=torch.float32)
            encoder = AutoModel.from_pretrained(directory, trust_remote_code=True, dtype=torch.float32)
            assert type(classifier).__module__.startswith("transformers_modules"), type(classifier).__module__
            with torch.no_grad():
                assert torch.equal(classifier(expected["clip"]).logits, expected["logits"]), directory
                assert torch.equal(encoder(expected["clip"]).pooler_output, expected["features"]), directory
        print("ok", len({cases!r}))
        """
    )


def test_encoder_checkpoint_initialises_a_classifier(tmp_path):
    config = tiny_config("hdc", num_labels=4)
    encoder = hf_vssl.HDCModel(config).eval()
    encoder.save_pretrained(tmp_path)
    classifier = hf_vssl.HDCForVideoClassification.from_pretrained(tmp_path, dtype=torch.float32).eval()
    clip = _clip()
    with torch.no_grad():
        torch.testing.assert_close(
            classifier.base_model(clip).pooler_output, encoder(clip).pooler_output, rtol=0, atol=0
        )
    assert classifier.classifier.out_features == 4
