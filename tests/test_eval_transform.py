"""One evaluation transform: the video processor saved with a checkpoint is the evaluation recipe of its card.

On a real encoded video, `training/evaluate.py`'s views (the data engine rendering `EvalViews` built from the
checkpoint's processor), the processor itself, `pipeline("video-classification")` and
`pipeline("video-feature-extraction")` must give the same pixels, for every method's checkpoint.
"""

import numpy as np
import pytest
import torch
from transformers import pipeline
from transformers.models.auto.video_processing_auto import AutoVideoProcessor

import hf_vssl
from hf_vssl.data.recipes import EvalViews
from hf_vssl.evaluation.runner import evaluation_batches, evaluation_recipe, video_features
from hf_vssl.hub import render_model_card
from hf_vssl.train.evaluate import load_evaluation_processor
from hf_vssl.train.release import save_processors
from hf_vssl.video_processing_vssl import VideoSSLVideoProcessor, clip_frame_indices

from .conftest import tiny_config
from .video_factory import smooth_frames, write_video

NUM_VIDEO_FRAMES = 50
# Each method's checkpoint saved with other evaluation views, so that every setting travels.
VIEWS = {"mlfo": (3, "three"), "ctrlaug": (2, "center"), "hdc": (2, "ten")}


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    """A labelled folder with one real H.264 video of 50 landscape frames (48 x 64)."""
    root = tmp_path_factory.mktemp("eval_videos")
    (root / "walk").mkdir()
    write_video(root / "walk" / "v.mp4", smooth_frames(NUM_VIDEO_FRAMES, (48, 64), seed=3), codec="libx264")
    return root


def _checkpoint(folder, method):
    """A tiny classifier of `method`, saved with its processors as a release is."""
    config = tiny_config(method, id2label={0: "walk", 1: "run"})
    torch.manual_seed(0)
    hf_vssl.METHODS[method].classifier(config).eval().save_pretrained(folder)
    num_clips, spatial_crops = VIEWS[method]
    save_processors(config, folder, num_clips=num_clips, spatial_crops=spatial_crops)
    return config


def _capture_pixel_values(model, calls):
    def hook(module, args, kwargs):
        calls.append((kwargs.get("pixel_values", args[0] if args else None)).detach().clone())

    return model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("method", list(VIEWS))
def test_evaluation_processor_and_pipelines_give_the_same_pixels(tmp_path, video_folder, method):
    config = _checkpoint(tmp_path, method)
    num_clips, spatial_crops = VIEWS[method]
    path = video_folder / "walk" / "v.mp4"

    # training/evaluate.py: the checkpoint's processor as the recipe, rendered by the evaluation loader
    processor = load_evaluation_processor(str(tmp_path), config)
    recipe = EvalViews.from_processor(processor)
    assert (recipe.num_clips, recipe.spatial_crops, recipe.num_frames) == (num_clips, spatial_crops, 8)
    batch = next(evaluation_batches(str(video_folder), recipe, num_workers=0, device="cpu"))
    expected = batch["pixel_values"]
    num_views = num_clips * {"center": 1, "three": 3, "ten": 10}[spatial_crops]
    assert expected.shape == (1, num_views, 8, 3, 32, 32)
    # clips at the training stride, spread over the whole video (not 8 frames spread over all 50)
    indices = clip_frame_indices(NUM_VIDEO_FRAMES, 8, 2, num_clips)
    assert indices[-1, -1] == NUM_VIDEO_FRAMES - 1 and (np.diff(indices, axis=1) == 2).all()
    np.testing.assert_array_equal(
        batch["frame_indices"][0].numpy(), np.repeat(indices, num_views // num_clips, 0)
    )

    same = {"rtol": 0, "atol": 1e-5}  # the same uint8 pixels; only the normalisation's float rounding differs
    video_processor = AutoVideoProcessor.from_pretrained(tmp_path)
    torch.testing.assert_close(
        video_processor(str(path), return_tensors="pt")["pixel_values"], expected, **same
    )

    classifier = pipeline("video-classification", model=str(tmp_path))
    calls = []
    _capture_pixel_values(classifier.model, calls)
    classifier(str(path))
    torch.testing.assert_close(calls[-1], expected, **same)

    extractor = pipeline("video-feature-extraction", model=str(tmp_path))
    calls = []
    _capture_pixel_values(extractor.model, calls)
    embedding = extractor(str(path), return_tensors=True)
    torch.testing.assert_close(calls[-1], expected, **same)
    # ... and its embedding is evaluation's video feature: the mean over the same views
    features = video_features(extractor.model, str(video_folder), recipe, num_workers=0, device="cpu")
    torch.testing.assert_close(embedding, features.features[0], rtol=1e-4, atol=1e-5)


def test_the_sizes_have_one_definition():
    """EvalViews' defaults are the video processor's, and the recipe for a model's clip size is the processor's."""
    default = VideoSSLVideoProcessor()
    assert EvalViews() == EvalViews.from_processor(default)
    assert EvalViews.from_processor(default).to_processor().to_dict() == default.to_dict()
    assert evaluation_recipe(default.num_frames, default.crop_size["height"]) == EvalViews()
    small = evaluation_recipe(8, 32, num_clips=1)
    assert (small.output_size, small.resize_short_side, small.num_clips) == (
        (32, 32),
        37,
        1,
    )  # 32 * 128 / 112
    with pytest.raises(ValueError, match="EvalViews renders"):
        EvalViews.from_processor(VideoSSLVideoProcessor(do_center_crop=False))


def test_model_card_states_the_clip_sampling_it_was_measured_with(tmp_path):
    _checkpoint(tmp_path, "mlfo")
    card = str(render_model_card("mlfo", tmp_path, model_id="org/mlfo-tiny"))
    assert "3 clips of 8 frames at stride 2 spread uniformly over each video, 3 crops of 32x32" in card
