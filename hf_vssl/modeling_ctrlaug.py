"""Controllable augmentations, local clips inside a global video (Qian et al., Visual Intelligence 2024): released encoder and video classifier."""

from .configuration_ctrlaug import CtrlAugConfig
from .modeling_vssl import VideoSSLEncoder, VideoSSLForVideoClassification, VideoSSLPreTrainedModel


class CtrlAugPreTrainedModel(VideoSSLPreTrainedModel):
    config_class = CtrlAugConfig
    base_model_prefix = "ctrlaug"


class CtrlAugModel(VideoSSLEncoder, CtrlAugPreTrainedModel):
    """The CtrlAug encoder: the backbone alone, returning the stage-4 map and its global average (see `VideoSSLEncoder`)."""


class CtrlAugForVideoClassification(VideoSSLForVideoClassification, CtrlAugPreTrainedModel):
    """The CtrlAug encoder with a linear classifier (see `VideoSSLForVideoClassification`)."""

    encoder_class = CtrlAugModel


CtrlAugConfig.register_for_auto_class()
CtrlAugModel.register_for_auto_class("AutoModel")
CtrlAugForVideoClassification.register_for_auto_class("AutoModelForVideoClassification")
