"""Configuration shared by every hf_vssl method: the backbone and the clip geometry.

Each method's configuration (``MLFOConfig``, ``CtrlAugConfig``, ``HDCConfig``) subclasses ``VideoSSLConfig`` and adds
its own hyper-parameters. Configs are transformers 5.x strict dataclasses: fields are type-checked and every
``validate_*`` method runs when a config is created or loaded, so a bad value fails at once with a message that
names it.
"""

import sys

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .backbones import BACKBONE_LAYOUTS, backbone_strides

# The pipeline every hf_vssl checkpoint declares in config.json (`custom_pipelines`), its code (pipelines.py) saved
# with the model's: `pipeline("video-feature-extraction", model=..., trust_remote_code=True)` then works where
# hf_vssl is not installed.
VIDEO_FEATURE_EXTRACTION = "video-feature-extraction"
CUSTOM_PIPELINES = {
    VIDEO_FEATURE_EXTRACTION: {
        "impl": "pipelines.VideoFeatureExtractionPipeline",
        "pt": ["AutoModel"],
        "type": "video",
    }
}


def _registered_pipeline_tasks() -> set[str]:
    pipelines = sys.modules.get("transformers.pipelines")  # not imported yet: nothing was registered
    return set(pipelines.PIPELINE_REGISTRY.get_supported_tasks()) if pipelines is not None else set()


def check_positive(name: str, values) -> None:
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    if not values or any(v <= 0 for v in values):
        raise ValueError(f"`{name}` must be positive, got {values}.")


def check_probability(name: str, value) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"`{name}` must lie in [0, 1], got {value}.")


@strict
class VideoSSLConfig(PreTrainedConfig):
    r"""
    Backbone and input geometry of a self-supervised video encoder.

    Args:
        backbone (`str`, *optional*, defaults to `"r3d"`):
            Encoder layout: `"r3d"` (torchvision R3D-18), `"r3d_hara"` (R3D-18 with a 7x7x7 stem and max-pool, as
            trained by the MLFO authors) or `"r2plus1d"` (torchvision R(2+1)D-18).
        num_channels (`int`, *optional*, defaults to 3):
            Input channels.
        embedding_size (`int`, *optional*, defaults to 64):
            Output channels of the stem.
        hidden_sizes (`list[int]`, *optional*, defaults to `(64, 128, 256, 512)`):
            Output channels of the four stages.
        depths (`list[int]`, *optional*, defaults to `(2, 2, 2, 2)`):
            Residual blocks per stage.
        num_frames (`int`, *optional*, defaults to 16):
            Frames per clip the model is trained on (the default clip length of processors and pipelines).
        image_size (`int`, *optional*, defaults to 112):
            Height and width of a training crop.
        classifier_dropout (`float`, *optional*, defaults to 0.0):
            Dropout before the linear layer of `*ForVideoClassification`.
        projection_dim (`int`, *optional*, defaults to 128):
            Width of the embeddings the pretraining objectives compare.
        temperature (`float`, *optional*, defaults to 0.07):
            Softmax temperature of the contrastive objectives.
    """

    model_type = "video_ssl"

    backbone: str = "r3d"
    num_channels: int = 3
    embedding_size: int = 64
    hidden_sizes: list[int] | tuple[int, ...] = (64, 128, 256, 512)
    depths: list[int] | tuple[int, ...] = (2, 2, 2, 2)
    num_frames: int = 16
    image_size: int = 112
    classifier_dropout: float | int = 0.0
    projection_dim: int = 128
    temperature: float | int = 0.07

    def __post_init__(self, **kwargs):
        # JSON has no tuples: keep one type so a saved and reloaded config compares equal to the original.
        self.hidden_sizes = list(self.hidden_sizes)
        self.depths = list(self.depths)
        super().__post_init__(**kwargs)
        # A declared task that this process has registered (hf_vssl imported) is served by the registry: keeping
        # the declaration would make `pipeline()` demand trust_remote_code for code it already has.
        declared = self.__dict__.get("custom_pipelines")
        if declared:
            kept = {task: info for task, info in declared.items() if task not in _registered_pipeline_tasks()}
            if kept:
                self.custom_pipelines = kept
            else:
                del self.custom_pipelines

    def validate_backbone(self):
        if self.backbone not in BACKBONE_LAYOUTS:
            raise ValueError(f"Unknown backbone {self.backbone!r}; choose one of {sorted(BACKBONE_LAYOUTS)}.")
        if len(self.hidden_sizes) != 4 or len(self.depths) != 4:
            raise ValueError(
                f"`hidden_sizes` and `depths` need one entry per stage (4), got {self.hidden_sizes} and {self.depths}."
            )
        for name in ("num_channels", "embedding_size", "hidden_sizes", "depths", "projection_dim"):
            check_positive(name, getattr(self, name))

    def validate_clip_geometry(self):
        check_positive("num_frames", self.num_frames)
        check_positive("image_size", self.image_size)
        stride_t, stride_h, _ = backbone_strides(self.backbone)[-1]
        if self.num_frames < stride_t:
            raise ValueError(
                f"`num_frames`={self.num_frames} is below the total temporal stride ({stride_t}) of backbone "
                f"{self.backbone!r}; use at least {stride_t} frames."
            )
        if self.image_size < stride_h:
            raise ValueError(
                f"`image_size`={self.image_size} is below the total spatial stride ({stride_h}) of backbone "
                f"{self.backbone!r}."
            )

    def validate_training_scalars(self):
        check_probability("classifier_dropout", self.classifier_dropout)
        check_positive("temperature", self.temperature)
