"""Multi-level feature optimisation (Qian et al., ICCV 2021): released encoder and video classifier."""

from .configuration_mlfo import MLFOConfig
from .modeling_vssl import VideoSSLEncoder, VideoSSLForVideoClassification, VideoSSLPreTrainedModel


class MLFOPreTrainedModel(VideoSSLPreTrainedModel):
    config_class = MLFOConfig
    base_model_prefix = "mlfo"


class MLFOModel(VideoSSLEncoder, MLFOPreTrainedModel):
    """The MLFO encoder: the backbone alone, returning the stage-4 map and its global average (see `VideoSSLEncoder`)."""


class MLFOForVideoClassification(VideoSSLForVideoClassification, MLFOPreTrainedModel):
    """The MLFO encoder with a linear classifier (see `VideoSSLForVideoClassification`)."""

    encoder_class = MLFOModel


MLFOConfig.register_for_auto_class()
MLFOModel.register_for_auto_class("AutoModel")
MLFOForVideoClassification.register_for_auto_class("AutoModelForVideoClassification")
