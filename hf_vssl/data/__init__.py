"""Data engine: streaming video sources, view recipes with recorded parameters, loaders, synthetic videos, prepare.

Decoding itself is :mod:`hf_vssl.video_decoding` (shared with the processors that travel with checkpoints).
The modules here, in the order a sample meets them:

==============  ==============================================================================================
``sources``     any video collection as a normalised streaming ``datasets`` source
``inputs``      remote videos fetched for the decoder; the count of videos skipped as unusable
``sampling``    stage-1 parameters: per-sample randomness, crop boxes, colour parameters, frame geometry
``plans``       the ``ViewRecipe`` base class, the ``ViewPlan`` it draws, and stage 1 (plan + decode)
``recipes``     each method's recipe, and evaluation's
``batches``     stacking samples into batches, sent from DataLoader workers as one shared block
``rendering``   stage 2: crops, resizes and flips on tensors
``color``       stage 2: colour jitter, gray, blur, normalisation
``loader``      the DataLoader, and ``stage2_placement``: where stage 2 runs
``encoding``    the video encoder (``prepare``, ``synthetic``, benchmarks and tests)
``prepare``     WebDataset shards, optionally re-encoded for fast decoding
``synthetic``   moving-shape videos with motion classes, for demos and tests
==============  ==============================================================================================
"""

from ..video_decoding import VideoDecodeError, VideoInfo, VideoReader, read_frames
from .batches import collate_views
from .inputs import SkippedVideos
from .loader import VideoViewDataset, ViewDataLoader, build_view_dataloader
from .plans import ViewRecipe
from .recipes import RECIPES, ClipViews, CtrlAugViews, EvalViews, HDCViews, MLFOViews, build_recipe
from .rendering import apply_views
from .sampling import ColorSpec, CropSpec
from .sources import load_video_source, source_label_names, split_source_for_process
from .synthetic import MOTION_CLASSES, render_motion_video, write_synthetic_shards, write_synthetic_videos

__all__ = [
    "MOTION_CLASSES",
    "RECIPES",
    "ClipViews",
    "ColorSpec",
    "CropSpec",
    "CtrlAugViews",
    "EvalViews",
    "HDCViews",
    "MLFOViews",
    "SkippedVideos",
    "VideoDecodeError",
    "VideoInfo",
    "VideoReader",
    "VideoViewDataset",
    "ViewDataLoader",
    "ViewRecipe",
    "apply_views",
    "build_recipe",
    "build_view_dataloader",
    "collate_views",
    "load_video_source",
    "read_frames",
    "render_motion_video",
    "source_label_names",
    "split_source_for_process",
    "write_synthetic_shards",
    "write_synthetic_videos",
]
