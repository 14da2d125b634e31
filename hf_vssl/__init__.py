"""hf_vssl: self-supervised video representation learning (MLFO, ctrlaug, HDC) on the Hugging Face stack.

Importing the package registers every configuration, model and processor with the transformers Auto classes, so
``AutoModel.from_pretrained(folder_or_repo)`` works without ``trust_remote_code``; pushed checkpoints also carry
their code and load with ``trust_remote_code=True`` where hf_vssl is not installed.
"""

# transformers' top-level `AutoVideoProcessor` is a placeholder that raises unless torchvision is installed (its
# own video processors need it); the class itself, in its module, works without it and resolves hf_vssl's
# PyAV-based processor. Exported here so that `from hf_vssl import AutoVideoProcessor` works in every environment.
from transformers.models.auto.video_processing_auto import AutoVideoProcessor

from .backbones import BACKBONE_LAYOUTS, StageInfo, VideoResNet, convert_torchvision_state_dict
from .configuration_ctrlaug import CtrlAugConfig
from .configuration_hdc import HDCConfig
from .configuration_mlfo import MLFOConfig
from .configuration_vssl import VideoSSLConfig
from .image_processing_vssl import VideoSSLImageProcessor
from .methods import METHODS, CardInfo, MethodSpec, register_method
from .modeling_ctrlaug import (
    CtrlAugForPreTraining,
    CtrlAugForVideoClassification,
    CtrlAugModel,
    CtrlAugPreTrainedModel,
    CtrlAugPreTrainingOutput,
)
from .modeling_hdc import (
    HDCForPreTraining,
    HDCForVideoClassification,
    HDCModel,
    HDCPreTrainedModel,
    HDCPreTrainingOutput,
)
from .modeling_mlfo import (
    MLFOForPreTraining,
    MLFOForVideoClassification,
    MLFOModel,
    MLFOPreTrainedModel,
    MLFOPreTrainingOutput,
)
from .pipelines import VideoFeatureExtractionPipeline, register_pipelines
from .video_processing_vssl import VideoDecodeError, VideoSSLVideoProcessor, read_video

__version__ = "0.1.0"


register_pipelines()

__all__ = [
    "AutoVideoProcessor",
    "BACKBONE_LAYOUTS",
    "METHODS",
    "CardInfo",
    "MethodSpec",
    "CtrlAugConfig",
    "CtrlAugForPreTraining",
    "CtrlAugPreTrainingOutput",
    "CtrlAugForVideoClassification",
    "CtrlAugModel",
    "CtrlAugPreTrainedModel",
    "HDCConfig",
    "HDCForPreTraining",
    "HDCForVideoClassification",
    "HDCModel",
    "HDCPreTrainedModel",
    "HDCPreTrainingOutput",
    "MLFOConfig",
    "MLFOForPreTraining",
    "MLFOPreTrainingOutput",
    "MLFOForVideoClassification",
    "MLFOModel",
    "MLFOPreTrainedModel",
    "StageInfo",
    "VideoDecodeError",
    "VideoFeatureExtractionPipeline",
    "VideoSSLImageProcessor",
    "VideoSSLVideoProcessor",
    "VideoResNet",
    "VideoSSLConfig",
    "convert_torchvision_state_dict",
    "read_video",
    "register_method",
    "register_pipelines",
]
