"""Model classes shared by every hf_vssl method.

Every method publishes the same two things: an encoder (``XModel``: the backbone, returning the stage-4 map, its
global average and, on request, every stage output) and a classifier on top of it (``XForVideoClassification``).
They are written once here; ``modeling_mlfo.py``, ``modeling_ctrlaug.py`` and ``modeling_hdc.py`` bind them to their
configuration class and ``base_model_prefix``, and add the method's pretraining model.

This module is shipped with pushed checkpoints as remote code: it imports only torch, transformers and siblings.
"""

import sys

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.dynamic_module_utils import custom_object_save
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput

from .backbones import VideoResNet
from .configuration_vssl import CUSTOM_PIPELINES
from .heads import init_module_


class VideoSSLPreTrainedModel(PreTrainedModel):
    """Weight initialisation and conventions shared by every hf_vssl model.

    Subclasses set ``config_class`` and ``base_model_prefix``. Inputs are ``pixel_values`` ``[B, T, C, H, W]`` as
    transformers' video models take them.
    """

    main_input_name = "pixel_values"
    input_modalities = "video"
    supports_gradient_checkpointing = True
    _no_split_modules = ["BasicBlock3d"]

    def __init__(self, config, *inputs, **kwargs):
        # Config validators run only when a config is created: `from_pretrained(folder, **overrides)` and
        # attribute assignment change it afterwards unchecked, so check again before building anything from it.
        config.validate()
        super().__init__(config, *inputs, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        # Advertise every head of this method (each class its module marked with `register_for_auto_class`) in
        # config.json, so that one pushed folder serves AutoModel, AutoModelForVideoClassification and
        # AutoModelForPreTraining through remote code, whichever head was saved.
        module = sys.modules[type(self).__module__]
        module_name = module.__name__.rsplit(".", 1)[-1]
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        for obj in vars(module).values():
            if isinstance(obj, type) and obj.__module__ == module.__name__ and "_auto_class" in vars(obj):
                auto_map.setdefault(obj._auto_class, f"{module_name}.{obj.__name__}")
        self.config.auto_map = auto_map
        # ... and the video-feature-extraction pipeline, with its code, for processes without hf_vssl.
        declared = self.config.__dict__.get("custom_pipelines")
        self.config.custom_pipelines = {**CUSTOM_PIPELINES, **(declared or {})}
        try:
            saved = super().save_pretrained(save_directory, *args, **kwargs)
        finally:  # where hf_vssl is imported its registry serves the task (see VideoSSLConfig.__post_init__)
            if declared is None:
                del self.config.custom_pipelines
            else:
                self.config.custom_pipelines = declared
        from .pipelines import VideoFeatureExtractionPipeline

        custom_object_save(VideoFeatureExtractionPipeline, save_directory)
        return saved

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # from_pretrained builds on the meta device and calls this only for what the checkpoint lacks, so every
        # parameter and buffer is (re)initialised here, through the guarded transformers.initialization functions
        # that leave loaded tensors alone. 3D convolutions get the fan-out Kaiming init of torchvision and of the
        # MLFO authors' backbone; heads, norms and queues get PyTorch's constructor defaults, as the authors' heads.
        if isinstance(module, nn.Conv3d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        else:
            init_module_(module)


def clip_to_channels_first(pixel_values: torch.Tensor) -> torch.Tensor:
    """``[B, T, C, H, W]`` (transformers' video layout) -> ``[B, C, T, H, W]`` (Conv3d layout)."""
    if pixel_values.ndim != 5:
        raise ValueError(
            "`pixel_values` must be [batch, frames, channels, height, width] (or [batch, views, frames, ...]), got "
            f"{tuple(pixel_values.shape)}."
        )
    return pixel_values.permute(0, 2, 1, 3, 4)


class VideoSSLEncoder(VideoSSLPreTrainedModel):
    """The encoder every method releases: a 3D CNN backbone and global average pooling.

    ``forward(pixel_values [B, T, C, H, W])`` returns ``BaseModelOutputWithPooling`` with ``last_hidden_state``
    ``[B, C4, t, h, w]`` (the stage-4 map), ``pooler_output`` ``[B, C4]`` (its global average, the feature used for
    evaluation) and, with ``output_hidden_states=True``, ``hidden_states``: the four stage outputs. Any clip length
    and resolution the backbone's strides allow works. Several views of each video (``[B, V, T, C, H, W]``, the
    clips x crops of the evaluation recipe, as the video processor makes them) give the mean of their pooled
    features as ``pooler_output``, and maps ``[B, V, ...]``.
    """

    def __init__(self, config):
        super().__init__(config)
        self.backbone = VideoResNet(
            layout=config.backbone,
            in_channels=config.num_channels,
            embedding_size=config.embedding_size,
            hidden_sizes=config.hidden_sizes,
            depths=config.depths,
        )
        self.post_init()

    @property
    def feature_info(self):
        """Channels and (t, h, w) stride of each stage output (see ``hidden_states``)."""
        return self.backbone.feature_info

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        views = pixel_values.shape[:2] if pixel_values.ndim == 6 else None
        stages = self.backbone(clip_to_channels_first(pixel_values.flatten(0, 1) if views else pixel_values))
        pooled = stages[-1].mean(dim=(2, 3, 4))
        if views:  # the video's feature is the mean over its views, as evaluation computes it
            stages = tuple(stage.unflatten(0, views) for stage in stages)
            pooled = pooled.unflatten(0, views).mean(dim=1)
        output = BaseModelOutputWithPooling(
            last_hidden_state=stages[-1],
            pooler_output=pooled,
            hidden_states=stages if output_hidden_states else None,
        )
        return output if return_dict else output.to_tuple()


class VideoSSLForVideoClassification(VideoSSLPreTrainedModel):
    """An encoder with dropout and a linear layer on its pooled feature.

    Subclasses name the encoder class in ``encoder_class``; the encoder is stored under ``base_model_prefix`` so that
    encoder and classifier checkpoints load into each other. ``forward(pixel_values [B, T, C, H, W], labels [B])``
    returns ``ImageClassifierOutput`` with ``logits`` ``[B, num_labels]`` and, when labels are given, the loss chosen
    by ``config.problem_type``.
    """

    encoder_class: type[VideoSSLEncoder]

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        setattr(self, self.base_model_prefix, self.encoder_class(config))
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = (
            nn.Linear(config.hidden_sizes[-1], config.num_labels) if config.num_labels > 0 else nn.Identity()
        )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        encoded = self.base_model(pixel_values, output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.classifier(self.dropout(encoded.pooler_output))
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        output = ImageClassifierOutput(loss=loss, logits=logits, hidden_states=encoded.hidden_states)
        return output if return_dict else output.to_tuple()
