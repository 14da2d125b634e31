"""Hierarchically decoupled spatial-temporal contrast (Zhang & Crandall, WACV 2022): released encoder and video classifier."""

from .configuration_hdc import HDCConfig
from .modeling_vssl import VideoSSLEncoder, VideoSSLForVideoClassification, VideoSSLPreTrainedModel


class HDCPreTrainedModel(VideoSSLPreTrainedModel):
    config_class = HDCConfig
    base_model_prefix = "hdc"


class HDCModel(VideoSSLEncoder, HDCPreTrainedModel):
    """The HDC encoder: the backbone alone, returning the stage-4 map and its global average (see `VideoSSLEncoder`)."""


class HDCForVideoClassification(VideoSSLForVideoClassification, HDCPreTrainedModel):
    """The HDC encoder with a linear classifier (see `VideoSSLForVideoClassification`)."""

    encoder_class = HDCModel


HDCConfig.register_for_auto_class()
HDCModel.register_for_auto_class("AutoModel")
HDCForVideoClassification.register_for_auto_class("AutoModelForVideoClassification")
