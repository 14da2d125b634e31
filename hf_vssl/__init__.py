"""hf_vssl: self-supervised video representation learning (MLFO, ctrlaug, HDC) on the Hugging Face stack.

Importing the package registers every configuration, model and processor with the transformers Auto classes, so
``AutoModel.from_pretrained(folder_or_repo)`` works without ``trust_remote_code``; pushed checkpoints also carry
their code and load with ``trust_remote_code=True`` where hf_vssl is not installed.
"""

from typing import NamedTuple

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, AutoModelForVideoClassification

# The module-level Auto classes: without torchvision the top-level names are placeholders.
from transformers.models.auto.image_processing_auto import AutoImageProcessor
from transformers.models.auto.video_processing_auto import AutoVideoProcessor

from .backbones import BACKBONE_LAYOUTS, StageInfo, VideoResNet, convert_torchvision_state_dict
from .configuration_ctrlaug import CtrlAugConfig
from .configuration_hdc import HDCConfig
from .configuration_mlfo import MLFOConfig
from .configuration_vssl import VideoSSLConfig
from .image_processing_vssl import VideoSSLImageProcessor
from .modeling_ctrlaug import (
    CtrlAugForPreTraining,
    CtrlAugForVideoClassification,
    CtrlAugModel,
    CtrlAugPreTrainedModel,
    CtrlAugPreTrainingOutput,
)
from .modeling_hdc import HDCForVideoClassification, HDCModel, HDCPreTrainedModel
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


class MethodClasses(NamedTuple):
    """The classes of one method; everything that iterates over methods reads ``METHODS``."""

    config: type
    model: type
    classifier: type
    pretraining: type | None = None


METHODS = {
    "mlfo": MethodClasses(MLFOConfig, MLFOModel, MLFOForVideoClassification, MLFOForPreTraining),
    "ctrlaug": MethodClasses(
        CtrlAugConfig, CtrlAugModel, CtrlAugForVideoClassification, CtrlAugForPreTraining
    ),
    "hdc": MethodClasses(HDCConfig, HDCModel, HDCForVideoClassification),
}

for _model_type, _classes in METHODS.items():
    AutoConfig.register(_model_type, _classes.config, exist_ok=True)
    AutoModel.register(_classes.config, _classes.model, exist_ok=True)
    AutoModelForVideoClassification.register(_classes.config, _classes.classifier, exist_ok=True)
    if _classes.pretraining is not None:
        AutoModelForPreTraining.register(_classes.config, _classes.pretraining, exist_ok=True)
    # One torch-only class for both backends: AutoImageProcessor asks for "torchvision" when it is installed.
    AutoImageProcessor.register(
        _classes.config,
        image_processor_classes={"pil": VideoSSLImageProcessor, "torchvision": VideoSSLImageProcessor},
        exist_ok=True,
    )
    # Positional: the keyword differs between transformers 5.17 and 5.23.
    AutoVideoProcessor.register(_classes.config, VideoSSLVideoProcessor, exist_ok=True)

register_pipelines()

__all__ = [
    "BACKBONE_LAYOUTS",
    "METHODS",
    "CtrlAugConfig",
    "CtrlAugForPreTraining",
    "CtrlAugPreTrainingOutput",
    "CtrlAugForVideoClassification",
    "CtrlAugModel",
    "CtrlAugPreTrainedModel",
    "HDCConfig",
    "HDCForVideoClassification",
    "HDCModel",
    "HDCPreTrainedModel",
    "MLFOConfig",
    "MLFOForPreTraining",
    "MLFOPreTrainingOutput",
    "MethodClasses",
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
    "register_pipelines",
]
