"""transformers' shared model and config tests (``ModelTesterMixin``, ``ConfigTester``) run against every model class.

The tests come from the transformers source distribution of the installed version (``make test`` fetches them with
``tests/fetch_transformers_tests.py``); nothing of them is copied into this repository. Each method runs with a
different backbone layout so that all three layouts meet the whole suite.
"""

import sys
import unittest
from pathlib import Path
from unittest import mock

import pytest
import torch
import transformers
from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

import hf_vssl

from .conftest import TINY_BACKBONE

SHARED_TESTS = (
    Path(__file__).resolve().parents[1] / ".cache" / "transformers-tests" / transformers.__version__
)
if not (SHARED_TESTS / "transformers_shared_tests" / "test_modeling_common.py").exists():
    pytest.fail(
        f"transformers {transformers.__version__} shared tests missing: run `make test` (or "
        f"`python tests/fetch_transformers_tests.py .cache/transformers-tests`)",
        pytrace=False,
    )
sys.path.insert(0, str(SHARED_TESTS))

from transformers_shared_tests.test_configuration_common import ConfigTester  # noqa: E402
from transformers_shared_tests.test_modeling_common import ModelTesterMixin, floats_tensor, ids_tensor  # noqa: E402


class VideoSSLModelTester:
    def __init__(self, parent, config_class, backbone, batch_size=2, num_labels=3, **config_overrides):
        self.parent = parent
        self.config_class = config_class
        self.backbone = backbone
        self.batch_size = batch_size
        self.num_labels = num_labels
        self.config_overrides = config_overrides
        self.num_frames = config_overrides.get("num_frames", TINY_BACKBONE["num_frames"])
        self.image_size = TINY_BACKBONE["image_size"]
        self.num_channels = 3
        self.is_training = True
        # hidden_states holds the four stage outputs
        self.expected_num_hidden_layers = 4

    def get_config(self):
        return self.config_class(
            backbone=self.backbone, num_labels=self.num_labels, **{**TINY_BACKBONE, **self.config_overrides}
        )

    def prepare_config_and_inputs(self):
        pixel_values = floats_tensor(
            [self.batch_size, self.num_frames, self.num_channels, self.image_size, self.image_size]
        )
        labels = ids_tensor([self.batch_size], self.num_labels)
        return self.get_config(), pixel_values, labels

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values, _ = self.prepare_config_and_inputs()
        return config, {"pixel_values": pixel_values}


class VideoSSLCommonTests(ModelTesterMixin):
    """What every hf_vssl method adds to ``ModelTesterMixin``; subclasses name the method and backbone."""

    method: str
    backbone: str
    # Small pretraining heads (and the clip length the method's objective needs).
    config_overrides: dict = {}
    # Clips per video whose stage outputs the pretraining model returns as `hidden_states` (all its views by
    # default; a momentum-encoder method returns its online encoder's clips only).
    pretraining_hidden_clips_per_video: int = 3
    # A CNN encoder: no attention, no token embeddings, no generation.
    has_attentions = False
    test_resize_embeddings = False
    test_torch_exportable = False
    test_pruning = False
    test_head_masking = False
    # transformers only runs this check for models whose config file carries a copyright year >= 2023; it applies
    # to every model that initialises weights (our config files carry no copyright header).
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self):
        spec = hf_vssl.METHODS[self.method]
        config_class, encoder = spec.config, spec.model
        self.all_model_classes = (encoder, spec.classifier) + (
            (spec.pretraining,) if spec.pretraining else ()
        )
        self.model_tester = VideoSSLModelTester(self, config_class, self.backbone, **self.config_overrides)
        self.config_tester = ConfigTester(
            self, config_class=config_class, has_text_modality=False, common_properties=[]
        )
        # transformers skips "base model" training tests only for models it knows by name.
        patcher = mock.patch.dict(MODEL_MAPPING_NAMES, {self.method: encoder.__name__})
        patcher.start()
        self.addCleanup(patcher.stop)

    @staticmethod
    def _is_pretraining(model_class):
        return model_class.__name__.endswith("ForPreTraining")

    def pretraining_inputs(self, clip: torch.Tensor) -> dict:
        """What a pretraining model takes, built from one clip per video: the views of its recipe
        `[B, V, T, C, H, W]` (3 here) and any recorded view parameters; a method's test class extends it."""
        return {"pixel_values": torch.stack([clip, clip.flip(1), clip.roll(1, dims=-1)], dim=1)}

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if self._is_pretraining(model_class):
            inputs_dict.update(self.pretraining_inputs(inputs_dict["pixel_values"]))
        if return_labels and model_class.__name__.endswith("ForVideoClassification"):
            # Fixed labels: the mixin prepares inputs more than once and compares the outputs.
            inputs_dict["labels"] = torch.arange(self.model_tester.batch_size) % self.model_tester.num_labels
        return inputs_dict

    def test_config(self):
        self.config_tester.run_common_tests()

    @unittest.skip(reason="A CNN has no input embeddings.")
    def test_inputs_embeds(self):
        pass

    @unittest.skip(reason="A CNN has no input embeddings.")
    def test_model_get_set_embeddings(self):
        pass

    def test_hidden_states_output(self):
        # The mixin's version expects token sequences; a CNN's hidden states are the stage maps.
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        frames, size = self.model_tester.num_frames, self.model_tester.image_size
        for model_class in self.all_model_classes:
            model = model_class(config).eval()
            inputs = self._prepare_for_class(inputs_dict, model_class)
            with torch.no_grad():
                outputs = model(**inputs, output_hidden_states=True)
            hidden_states = outputs.hidden_states
            self.assertEqual(len(hidden_states), 4)
            # A pretraining model's encoder sees `pretraining_hidden_clips_per_video` views of every video.
            clips = self.model_tester.batch_size * (
                self.pretraining_hidden_clips_per_video if self._is_pretraining(model_class) else 1
            )
            for state, info in zip(hidden_states, model.base_model.feature_info):
                t, h, w = info.stride
                expected = [clips, info.num_channels, frames // t, -(-size // h), -(-size // w)]
                self.assertListEqual(list(state.shape), expected)


class MLFOCommonTest(VideoSSLCommonTests, unittest.TestCase):
    method, backbone = "mlfo", "r3d_hara"
    config_overrides = dict(
        num_frames=16, projection_dim=16, num_prototypes=10, logit_queue_size=8, motion_excitation_reduction=4
    )


class CtrlAugCommonTest(VideoSSLCommonTests, unittest.TestCase):
    method, backbone = "ctrlaug", "r2plus1d"
    config_overrides = dict(projection_dim=16)

    def pretraining_inputs(self, clip):
        # The global view and two local clips, with each local clip's tube in the global view.
        inputs = super().pretraining_inputs(clip)
        tubes = torch.tensor([[0.0, 0.5, 0.1, 0.2, 0.6, 0.9], [0.25, 0.75, 0.4, 0.0, 1.0, 0.5]])
        inputs["tubes"] = tubes.expand(clip.shape[0], 2, 6).to(clip.device, clip.dtype).clone()
        return inputs


class HDCCommonTest(VideoSSLCommonTests, unittest.TestCase):
    method, backbone = "hdc", "r3d"
    config_overrides = dict(projection_dim=16, queue_size=8)
    pretraining_hidden_clips_per_video = 1  # the anchors, through the online encoder
