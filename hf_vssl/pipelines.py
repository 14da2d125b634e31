"""A ``"video-feature-extraction"`` pipeline: videos in, one embedding per video out.

transformers' own feature-extraction pipelines take text or single images; this one takes videos (paths or
decoded arrays) and returns the encoder's pooled embedding (``pooler_output``) or its feature map
(``last_hidden_state``)::

    import hf_vssl  # registers the task
    from transformers import pipeline

    extractor = pipeline("video-feature-extraction", model="org/mlfo-r3d18-k400")
    embedding = extractor("clip.mp4")                      # list of C floats
    embeddings = extractor(["a.mp4", "b.webm"], batch_size=2, return_tensors=True)   # list of [C] tensors
"""

import collections.abc
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import AutoModel
from transformers.pipelines import PIPELINE_REGISTRY, Pipeline
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

from .configuration_vssl import VIDEO_FEATURE_EXTRACTION
from .image_processing_vssl import VideoSSLImagesKwargs, is_frame
from .video_processing_vssl import VideoSSLVideoProcessor


def _concatenate_batch(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Collate preprocessed videos (each ``pixel_values`` ``[1, T, C, H, W]``) into one batch."""
    try:
        return {key: torch.cat([item[key] for item in items]) for key in items[0]}
    except RuntimeError as err:
        shapes = sorted({tuple(item["pixel_values"].shape[1:]) for item in items})
        raise ValueError(f"Cannot batch videos of different shapes {shapes}; use batch_size=1.") from err


class VideoFeatureExtractionPipeline(Pipeline):
    """Extract one embedding per video with any hf_vssl encoder (``AutoModel``).

    Inputs: a video file path (or URL / encoded ``bytes``), an array or tensor ``[T, H, W, C]`` / ``[T, C, H, W]``,
    or a list of those (a batch, processed ``batch_size`` at a time). Each video is seen as the checkpoint's video
    processor says, which is the evaluation recipe of its model card (clips of ``num_frames`` frames, by default
    the model's ``config.num_frames``, at the training stride, spread over the video); the embedding is the mean
    over those views.

    Call arguments:
        num_frames (`int`, *optional*): frames sampled per video.
        pool (`bool`, defaults to `True`): return ``pooler_output`` ``[C]``; with ``False`` the unpooled
            ``last_hidden_state`` (``[C, t, h, w]`` for hf_vssl encoders).
        return_tensors (`bool`, defaults to `False`): return a ``torch.Tensor`` per video instead of (nested)
            lists of floats.

    Preprocessing uses the checkpoint's video processor; with only an image processor, a video processor with the
    image processor's settings (the same transform, plus the clip sampling).
    """

    _load_processor = False
    _load_image_processor = None  # optional: either processor will do, the video processor is preferred
    _load_video_processor = None
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.video_processor is None and self.image_processor is None:
            raise ValueError(
                f"The {VIDEO_FEATURE_EXTRACTION} pipeline needs a video processor or an image processor; none was "
                "found for this model. Pass one, e.g. video_processor=VideoSSLVideoProcessor()."
            )
        # One loader: the video processor's, also when the checkpoint only has an image processor.
        self._processor = self.video_processor or VideoSSLVideoProcessor(
            **{
                name: getattr(self.image_processor, name, None)
                for name in VideoSSLImagesKwargs.__annotations__
            }
        )

    def _sanitize_parameters(self, num_frames=None, pool=None, return_tensors=None):
        preprocess_params = {} if num_frames is None else {"num_frames": num_frames}
        forward_params = {} if pool is None else {"pool": pool}
        postprocess_params = {} if return_tensors is None else {"return_tensors": return_tensors}
        return preprocess_params, forward_params, postprocess_params

    def __call__(self, inputs: Any, **kwargs) -> Any:
        """Embed one video (returns one embedding) or a list of videos (returns a list of embeddings)."""
        if isinstance(inputs, (np.ndarray, torch.Tensor)) and inputs.ndim == 5:
            inputs = list(inputs)  # a batch array [B, T, ...]
        elif isinstance(inputs, list) and inputs and all(is_frame(item) for item in inputs):
            raise ValueError(
                "A list is a batch of videos, but this one holds single frames. Pass one video as a path or an "
                "array [T, H, W, C] (e.g. np.stack(frames))."
            )
        return super().__call__(inputs, **kwargs)

    def _default_num_frames(self) -> int:
        num_frames = getattr(self.model.config, "num_frames", None)
        return num_frames if num_frames is not None else self._processor.num_frames

    def preprocess(self, video: Any, num_frames: int | None = None) -> dict[str, torch.Tensor]:
        # As transformers' video-classification pipeline calls the processor.
        num_frames = num_frames or self._default_num_frames()
        inputs = self._processor(video, num_frames=num_frames, do_sample_frames=True, return_tensors="pt")
        if inputs["pixel_values"].shape[0] != 1:
            raise ValueError(f"Expected one video per input, got {inputs['pixel_values'].shape[0]}.")
        return {"pixel_values": inputs["pixel_values"].to(self.dtype)}

    def _forward(self, model_inputs: dict[str, torch.Tensor], pool: bool = True) -> dict[str, torch.Tensor]:
        outputs = self.model(**model_inputs)
        if not pool:
            return {"features": outputs.last_hidden_state}
        pooled = getattr(outputs, "pooler_output", None)
        if pooled is None:
            raise ValueError(f"{type(self.model).__name__} returns no `pooler_output`; call with pool=False.")
        return {"features": pooled}

    def postprocess(self, model_outputs: dict[str, torch.Tensor], return_tensors: bool = False) -> Any:
        features = model_outputs["features"][0]
        return features if return_tensors else features.tolist()

    def get_iterator(
        self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params
    ):
        # transformers' batching collates through a tokenizer / feature extractor; videos only need concatenating.
        if batch_size == 1:
            return super().get_iterator(
                inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params
            )
        if isinstance(inputs, collections.abc.Sized):
            dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        else:
            dataset, num_workers = (
                PipelineIterator(inputs, self.preprocess, preprocess_params),
                min(num_workers, 1),
            )
        loader = DataLoader(
            dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=_concatenate_batch
        )
        model_iterator = PipelineIterator(loader, self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)


def register_pipelines() -> None:
    """Register the ``"video-feature-extraction"`` task with ``transformers.pipeline`` (idempotent)."""
    registered = PIPELINE_REGISTRY.supported_tasks.get(VIDEO_FEATURE_EXTRACTION)
    if registered is not None and registered["impl"] is VideoFeatureExtractionPipeline:
        return
    PIPELINE_REGISTRY.register_pipeline(
        VIDEO_FEATURE_EXTRACTION,
        pipeline_class=VideoFeatureExtractionPipeline,
        pt_model=AutoModel,
        type="video",
    )


__all__ = ["VIDEO_FEATURE_EXTRACTION", "VideoFeatureExtractionPipeline", "register_pipelines"]
