"""A fourth method defined entirely outside the package, to show that `MethodSpec` alone makes a method.

`ToyForPreTraining` is a deliberately trivial objective (two random clips of a video must find each other
among the batch's clips: InfoNCE on pooled features) on the shared encoder; `ToyViews` draws those two clips.
Importing this module registers the method, so `training/pretrain.py --method tests.toy_method:TOY_METHOD` runs it.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub.dataclasses import strict
from transformers.modeling_outputs import ModelOutput

from hf_vssl import CardInfo, MethodSpec, VideoSSLConfig, register_method
from hf_vssl.data.plans import ViewPlan, ViewRecipe
from hf_vssl.data.sampling import sample_color_params, sample_crop_box
from hf_vssl.losses import info_nce
from hf_vssl.modeling_vssl import VideoSSLEncoder, VideoSSLForVideoClassification, VideoSSLPreTrainedModel


@strict
class ToyConfig(VideoSSLConfig):
    model_type = "toy_vssl"


class ToyPreTrainedModel(VideoSSLPreTrainedModel):
    config_class = ToyConfig
    base_model_prefix = "toy"


class ToyModel(VideoSSLEncoder, ToyPreTrainedModel):
    pass


class ToyForVideoClassification(VideoSSLForVideoClassification, ToyPreTrainedModel):
    encoder_class = ToyModel


@dataclass
class ToyPreTrainingOutput(ModelOutput):
    loss: torch.FloatTensor | None = None


class ToyForPreTraining(ToyPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.toy = ToyModel(config)
        self.post_init()

    def forward(self, pixel_values, **kwargs):
        batch = pixel_values.shape[0]
        features = self.toy(pixel_values.flatten(0, 1)).pooler_output
        embeddings = F.normalize(features, dim=-1)
        positives = (
            torch.eye(2 * batch, dtype=torch.bool).view(batch, 2, batch, 2).flip(1).view(2 * batch, -1)
        )
        ignore = torch.eye(2 * batch, dtype=torch.bool)
        loss = info_nce(embeddings, embeddings, positives, self.config.temperature, ignore_mask=ignore)
        return ToyPreTrainingOutput(loss=loss)


@dataclass(kw_only=True)
class ToyViews(ViewRecipe):
    """Two clips of `clip_length` consecutive frames from random starts, each with its own crop."""

    clip_length: int = 8
    view_names: ClassVar[tuple[str, ...]] = ("first", "second")

    @property
    def min_num_frames(self) -> int:
        return self.clip_length

    def plan(self, info, geometry, rng: np.random.Generator) -> ViewPlan:
        T = self.clip_length
        if info.num_frames < T:
            raise self.too_short(info)
        starts = rng.integers(0, info.num_frames - T + 1, size=2)
        height, width = geometry.sampling_size
        boxes = np.stack([sample_crop_box(rng, height, width, None) for _ in range(2)])
        canvas, source = geometry.snap(boxes)
        return ViewPlan(
            decode_indices=(starts[:, None] + np.arange(T)).reshape(-1),
            frame_slots=np.arange(2 * T).reshape(2, T),
            canvas_boxes=canvas,
            crop_boxes=source,
            flips=np.zeros(2, dtype=bool),
            color=sample_color_params(rng, 2, T, None),
        )


TEMPLATE = Path(__file__).with_name("toy_card_template.md")
TOY_METHOD = register_method(
    MethodSpec(
        name="toy_vssl",
        config=ToyConfig,
        model=ToyModel,
        classifier=ToyForVideoClassification,
        pretraining=ToyForPreTraining,
        recipe=f"{__name__}:ToyViews",
        card=CardInfo("Toy", "0000.00000", template=TEMPLATE),
    )
)
