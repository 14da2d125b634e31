"""hf_vssl: self-supervised video representation learning (MLFO, ctrlaug, HDC) on the Hugging Face stack.

Importing the package registers every configuration, model and processor with the transformers Auto classes, so
``AutoModel.from_pretrained(folder_or_repo)`` works without ``trust_remote_code``; pushed checkpoints also carry
their code and load with ``trust_remote_code=True`` where hf_vssl is not installed.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForVideoClassification,
)

from .backbones import BACKBONE_LAYOUTS, StageInfo, VideoResNet, convert_torchvision_state_dict
from .configuration_ctrlaug import CtrlAugConfig
from .configuration_hdc import HDCConfig
from .configuration_mlfo import MLFOConfig
from .configuration_vssl import VideoSSLConfig
from .modeling_ctrlaug import CtrlAugForVideoClassification, CtrlAugModel, CtrlAugPreTrainedModel
from .modeling_hdc import HDCForVideoClassification, HDCModel, HDCPreTrainedModel
from .modeling_mlfo import MLFOForVideoClassification, MLFOModel, MLFOPreTrainedModel

__version__ = "0.1.0"

# One entry per method: (config, encoder, classifier). Everything that iterates over methods reads this table.
METHODS = {
    "mlfo": (MLFOConfig, MLFOModel, MLFOForVideoClassification),
    "ctrlaug": (CtrlAugConfig, CtrlAugModel, CtrlAugForVideoClassification),
    "hdc": (HDCConfig, HDCModel, HDCForVideoClassification),
}

for _model_type, (_config, _encoder, _classifier) in METHODS.items():
    AutoConfig.register(_model_type, _config, exist_ok=True)
    AutoModel.register(_config, _encoder, exist_ok=True)
    AutoModelForVideoClassification.register(_config, _classifier, exist_ok=True)

__all__ = [
    "BACKBONE_LAYOUTS",
    "METHODS",
    "CtrlAugConfig",
    "CtrlAugForVideoClassification",
    "CtrlAugModel",
    "CtrlAugPreTrainedModel",
    "HDCConfig",
    "HDCForVideoClassification",
    "HDCModel",
    "HDCPreTrainedModel",
    "MLFOConfig",
    "MLFOForVideoClassification",
    "MLFOModel",
    "MLFOPreTrainedModel",
    "StageInfo",
    "VideoResNet",
    "VideoSSLConfig",
    "convert_torchvision_state_dict",
]
