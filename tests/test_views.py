"""View engine and recipes: sampled parameters, recorded geometry and stage-2 pixel operations.

Recipe tests run on real encoded videos (PyAV, libx264); stage-2 operations are checked against plain per-pixel
references written from their definitions (torchvision semantics, colorsys for HSV).
"""

import colorsys
import copy
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import hf_vssl
from hf_vssl.data.batches import SharedBatch, collate_views
from hf_vssl.data.color import IMAGENET_MEAN, IMAGENET_STD, gaussian_blur, render_color
from hf_vssl.data.plans import sample_views
from hf_vssl.data.recipes import ClipViews, CtrlAugViews, EvalViews, HDCViews, MLFOViews, build_recipe
from hf_vssl.data.rendering import apply_views, resample_views
from hf_vssl.data.sampling import ColorSpec, CropSpec, sample_color_params, sample_crop_box, sample_rng
from hf_vssl.video_decoding import VideoDecodeError, VideoReader

from .video_factory import index_frames, read_index, write_video

MEAN = np.array(IMAGENET_MEAN)
STD = np.array(IMAGENET_STD)
NO_COLOR = ColorSpec()
LUMA = np.array([0.2989, 0.587, 0.114])


# ----------------------------------------------------------------------------------------------------------
# fixtures and helpers
# ----------------------------------------------------------------------------------------------------------
def smooth_static_frames(num_frames: int, size: tuple[int, int]) -> np.ndarray:
    """The same smooth image in every frame: any crop can be compared with any other view's pixels."""
    height, width = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.stack(
        [
            128 + 90 * np.sin(x / width * 2.1 * np.pi + 0.3) * np.cos(y / height * 1.3 * np.pi),
            60 + 150 * x / width,
            60 + 150 * y / height,
        ],
        axis=-1,
    )
    return np.broadcast_to(np.clip(image, 0, 255).astype(np.uint8), (num_frames, height, width, 3)).copy()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("views")
    return {
        # frame i shows the number i (4x4 bit blocks), so decoded pixels tell which frame they are
        "index": write_video(root / "index.mp4", index_frames(96, (64, 64)), gop=12),
        "static": write_video(root / "static.mp4", smooth_static_frames(80, (96, 128)), gop=16),
        "short": write_video(root / "short.mp4", index_frames(20, (32, 32))),
    }


def sample(path, recipe, key=0, seed=0, epoch=0):
    with VideoReader(path) as reader:
        return sample_views(reader, recipe, sample_rng(seed, epoch, key))


def render(path, recipe, keys=(0,), seed=0):
    return apply_views(collate_views([sample(path, recipe, key, seed) for key in keys]), recipe)


def to_unit(pixel_values: torch.Tensor) -> np.ndarray:
    """Normalised ``[..., 3, H, W]`` -> ``[..., H, W, 3]`` floats in [0, 1]."""
    array = pixel_values.movedim(-3, -1).numpy().astype(np.float64)
    return array * STD + MEAN


def to_uint8(pixel_values: torch.Tensor) -> np.ndarray:
    return np.clip(np.rint(to_unit(pixel_values) * 255), 0, 255).astype(np.uint8)


def identity_params(n: int) -> dict[str, torch.Tensor]:
    return {
        "brightness": torch.ones(n),
        "contrast": torch.ones(n),
        "saturation": torch.ones(n),
        "hue": torch.zeros(n),
        "gray": torch.zeros(n, dtype=torch.bool),
        "gray_channel": torch.full((n,), -1),
        "jitter_order": torch.arange(4).repeat(n, 1),
    }


def manual_batch(frames: np.ndarray, boxes, flips, slots) -> dict[str, torch.Tensor]:
    """A stage-1 batch of one video built by hand: frames [S, H, W, 3], boxes [V, 4], slots [V, T]."""
    slots = torch.as_tensor(slots)
    V, T = slots.shape
    batch = {
        name: value.repeat(V, T, *([1] * (value.ndim - 1))).view(V, T, *value.shape[1:])
        for name, value in identity_params(1).items()
    }
    batch = {name: value[None] for name, value in batch.items()}
    batch["blur_sigma"] = torch.zeros(1, V, T)
    batch["frames"] = torch.as_tensor(frames)[None]
    batch["frame_slots"] = slots[None]
    batch["canvas_boxes"] = torch.as_tensor(boxes, dtype=torch.int64)[None]
    batch["flips"] = torch.as_tensor(flips)[None]
    return batch


# ----------------------------------------------------------------------------------------------------------
# randomness
# ----------------------------------------------------------------------------------------------------------
def test_sample_rng_is_a_function_of_seed_epoch_and_key():
    draw = lambda *args: sample_rng(*args).random(4).tolist()  # noqa: E731
    assert draw(0, 0, "a") == draw(0, 0, "a")
    assert draw(0, 0, "a") != draw(0, 0, "b")
    assert draw(0, 0, "a") != draw(0, 1, "a")
    assert draw(0, 0, "a") != draw(1, 0, "a")


def test_crop_box_follows_its_spec():
    rng = np.random.default_rng(0)
    spec = CropSpec(scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), log_ratio=False, swap_prob=0.5)
    boxes = np.stack([sample_crop_box(rng, 150, 200, spec) for _ in range(500)])
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 200).all() and (boxes[:, 3] <= 150).all()
    area = w * h / (150 * 200)
    assert area.min() > 0.49 and area.max() <= 1.0
    assert (w > h).any() and (h > w).any()  # the w/h swap produces tall boxes in a wide frame
    assert np.array_equal(sample_crop_box(rng, 150, 200, None), [0, 0, 200, 150])


def test_color_params_per_frame_or_per_view():
    rng = np.random.default_rng(0)
    spec = ColorSpec(
        brightness=0.5, contrast=0.5, saturation=0.5, hue=0.25, gray_prob=0.5, gray_mode="channel"
    )
    per_frame = sample_color_params(rng, 3, 16, ColorSpec(**{**spec.__dict__, "per_frame": True}))
    per_view = sample_color_params(rng, 3, 16, spec)
    assert per_frame["brightness"].std(axis=1).min() > 0
    assert (per_view["brightness"].std(axis=1) == 0).all()
    for params in (per_frame, per_view):
        assert params["brightness"].min() >= 0.5 and params["brightness"].max() <= 1.5
        assert np.abs(params["hue"]).max() <= 0.25
        assert set(np.unique(params["gray_channel"])) <= {0, 1, 2}
        assert (np.sort(params["jitter_order"], axis=-1) == np.arange(4)).all()
    off = sample_color_params(rng, 2, 4, None)
    assert (off["brightness"] == 1).all() and (off["hue"] == 0).all() and not off["gray"].any()


# ----------------------------------------------------------------------------------------------------------
# MLFO
# ----------------------------------------------------------------------------------------------------------
def plain_mlfo(**overrides) -> MLFOViews:
    """MLFO's sampling with every spatial and colour augmentation off and no resampling (64x64 source)."""
    settings = dict(crop=None, flip_prob=0.0, color=NO_COLOR, squash_size=None, output_size=(64, 64))
    return MLFOViews(**{**settings, **overrides})


@pytest.mark.parametrize("key", range(4))
def test_mlfo_global_clip_is_the_even_frames_of_a_and_b(videos, key):
    recipe = plain_mlfo()
    views = render(videos["index"], recipe, keys=[key])
    indices = views["frame_indices"][0]
    a_and_b = torch.cat([indices[0], indices[1]])
    assert torch.equal(indices[2], a_and_b[::2])
    # the code's temporal sampling: 32 indices min(round(s + k r), F - 1), r in [1, min(3, F / 32)]
    rate = float(views["temporal_stride"][0])
    assert 1.0 <= rate <= 3.0
    start = int(a_and_b[0])
    expected = np.minimum(np.floor(start + np.arange(32) * rate + 0.5), 95)
    assert a_and_b.tolist() == expected.astype(int).tolist()
    # pixels: every view shows exactly its frames, and G's pixels are A and B's even frames
    pixels = views["pixel_values"][0]
    for v in range(3):
        assert read_index(to_uint8(pixels[v])).tolist() == indices[v].tolist()
    assert torch.equal(pixels[2], torch.cat([pixels[0], pixels[1]])[::2])


def test_mlfo_shares_decoded_frames_and_keeps_g_equal_under_resampling(videos):
    recipe = plain_mlfo(output_size=(112, 112))  # upsampled: same frames, same box -> identical pixels
    stage1 = sample(videos["index"], recipe, key=5)
    assert stage1["frames"].shape[0] == 32  # A and B's frames decoded once; G reuses them
    assert stage1["frame_slots"][2].tolist() == list(range(0, 32, 2))
    pixels = apply_views(collate_views([stage1]), recipe)["pixel_values"][0]
    assert torch.equal(pixels[2], torch.cat([pixels[0], pixels[1]])[::2])


def test_mlfo_default_augmentation_follows_the_code(videos):
    recipe = MLFOViews()
    views = render(videos["index"], recipe, keys=range(6))
    boxes = views["crop_boxes"].numpy()  # source pixels of a 64x64 video; drawn in the 200x150 squashed frame
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]) / (64 * 64)
    assert area.min() > 0.45 and area.max() <= 1.0
    assert not torch.equal(views["crop_boxes"][:, 0], views["crop_boxes"][:, 1])  # own crop per clip
    # colour and gray drawn per frame, gray by channel splitting
    assert (views["brightness"].std(dim=-1) > 0).all()
    assert set(views["gray_channel"].unique().tolist()) <= {0, 1, 2}
    assert 0.3 < views["gray"].float().mean() < 0.7
    per_clip = render(videos["index"], MLFOViews(per_frame_color=False), keys=[0])
    assert (per_clip["brightness"].std(dim=-1) == 0).all()
    assert views["pixel_values"].shape == (6, 3, 16, 3, 112, 112)


def test_mlfo_skips_videos_that_are_too_short(videos):
    with pytest.raises(VideoDecodeError, match="too short") as info:
        sample(videos["short"], MLFOViews())
    assert info.value.reason == "too short" and "short.mp4" in str(info.value)


# ----------------------------------------------------------------------------------------------------------
# HDC
# ----------------------------------------------------------------------------------------------------------
COLOR_PARAMS = (
    "brightness",
    "contrast",
    "saturation",
    "hue",
    "jitter_order",
    "gray",
    "gray_channel",
    "blur_sigma",
)


def test_hdc_positives_share_exactly_their_cue(videos):
    recipe = HDCViews()
    views = render(videos["index"], recipe, keys=range(8))
    anchor, spatial, temporal = 0, 1, 2
    for b in range(8):
        indices = views["frame_indices"][b]
        # k_S: same box, flip and colour/gray/blur parameters, a different (here: disjoint) time window
        assert torch.equal(views["crop_boxes"][b, spatial], views["crop_boxes"][b, anchor])
        assert views["flips"][b, spatial] == views["flips"][b, anchor]
        for name in COLOR_PARAMS:
            assert torch.equal(views[name][b, spatial], views[name][b, anchor]), name
        assert not set(indices[spatial].tolist()) & set(indices[anchor].tolist())
        # k_T: the same frames
        assert torch.equal(indices[temporal], indices[anchor])
    # ... and nothing more: k_T's crop and colour are drawn independently of q's
    assert (views["crop_boxes"][:, temporal] != views["crop_boxes"][:, anchor]).any(dim=-1).all()
    assert (views["hue"][:, temporal] != views["hue"][:, anchor]).any()
    assert (views["blur_sigma"] > 0).any()


def test_hdc_temporal_positive_reuses_the_anchor_frames(videos):
    recipe = HDCViews(crop=None, flip_prob=0.0, color=NO_COLOR, output_size=(64, 64))
    stage1 = sample(videos["index"], recipe, key=3)
    assert stage1["frames"].shape[0] == 32  # q and k_S decoded, k_T reuses q's slots
    pixels = apply_views(collate_views([stage1]), recipe)["pixel_values"][0]
    assert torch.equal(pixels[2], pixels[0])
    assert read_index(to_uint8(pixels[1])).tolist() == stage1["frame_indices"][1].tolist()


def test_hdc_overlapping_windows_still_differ(videos):
    recipe = HDCViews(disjoint_windows=False, anchor_strides=(1,), spatial_positive_strides=(1,))
    for key in range(10):
        indices = sample(videos["index"], recipe, key)["frame_indices"]
        assert indices[0].tolist() != indices[1].tolist()


# ----------------------------------------------------------------------------------------------------------
# ctrlaug
# ----------------------------------------------------------------------------------------------------------
def test_ctrlaug_tubes_locate_local_clips_inside_the_global_view(videos):
    recipe = CtrlAugViews()
    views = render(videos["index"], recipe, keys=range(8))
    T = recipe.clip_length
    for b in range(8):
        start, span = views["global_span"][b].tolist()
        indices = views["frame_indices"][b].numpy()
        # G: frame i stands for [i/T, (i+1)/T) of the span and shows the frame at its centre
        assert indices[0].tolist() == np.floor(start + (np.arange(T) + 0.5) * span / T).astype(int).tolist()
        g_box, g_flip = views["crop_boxes"][b, 0].numpy().astype(np.float64), bool(views["flips"][b, 0])
        for k in range(recipe.num_local_clips):
            t0, t1, x0, y0, x1, y1 = views["tubes"][b, k].numpy().astype(np.float64)
            # time: local frame j starts at t0 + j (t1 - t0) / T of G's span
            times = t0 + np.arange(T) * (t1 - t0) / T
            assert np.floor(start + times * span + 1e-4).astype(int).tolist() == indices[k + 1].tolist()
            assert 0 <= t0 < t1 <= 1 and span >= 4 * (t1 - t0) * span - 1e-6
            # space: the tube is the local box in G's (flip-corrected) normalised frame, clipped to it
            box = views["crop_boxes"][b, k + 1].numpy().astype(np.float64)
            u = (box[[0, 2]] - g_box[0]) / (g_box[2] - g_box[0])
            v = (box[[1, 3]] - g_box[1]) / (g_box[3] - g_box[1])
            if g_flip:
                u = 1 - u[::-1]
            np.testing.assert_allclose([x0, x1, y0, y1], np.clip([*u, *v], 0, 1), atol=1e-6)
            inter = max(0, min(box[2], g_box[2]) - max(box[0], g_box[0])) * max(
                0, min(box[3], g_box[3]) - max(box[1], g_box[1])
            )
            assert inter / ((box[2] - box[0]) * (box[3] - box[1])) >= 0.5 - 1e-6


def crop_normalised(image: torch.Tensor, box, size) -> torch.Tensor:
    """Bilinear crop of ``image`` [C, H, W] at a normalised box (x0, y0, x1, y1), resized to ``size``."""
    x0, y0, x1, y1 = box
    h, w = size
    xs = x0 + (torch.arange(w) + 0.5) / w * (x1 - x0)
    ys = y0 + (torch.arange(h) + 0.5) / h * (y1 - y0)
    grid = torch.stack(torch.meshgrid(ys * 2 - 1, xs * 2 - 1, indexing="ij")[::-1], dim=-1)
    return F.grid_sample(image[None].double(), grid[None].double(), align_corners=False)[0]


def test_ctrlaug_local_pixels_match_the_global_view_inside_the_tube(videos):
    """Colour off and local boxes inside G's box: each local clip is G's pixels resampled inside its tube."""
    recipe = CtrlAugViews(color=NO_COLOR, min_local_coverage=1.0, local_crop=CropSpec(scale=(0.3, 0.5)))
    views = render(videos["static"], recipe, keys=range(6))
    checked = 0
    for b in range(6):
        global_image = torch.from_numpy(to_unit(views["pixel_values"][b, 0, 0])).permute(2, 0, 1)
        for k in range(recipe.num_local_clips):
            tube = views["tubes"][b, k, 2:].tolist()
            local = torch.from_numpy(to_unit(views["pixel_values"][b, k + 1, 0])).permute(2, 0, 1)
            if views["flips"][b, k + 1] != views["flips"][b, 0]:  # bring the clip into G's orientation
                local = local.flip(-1)
            error = (crop_normalised(global_image, tube, local.shape[-2:]) - local).abs().mean().item()
            shifted = (
                [tube[0] + 0.2, tube[1], tube[2] + 0.2, tube[3]]
                if tube[2] < 0.8
                else [tube[0] - 0.2, tube[1], tube[2] - 0.2, tube[3]]
            )
            wrong = (crop_normalised(global_image, shifted, local.shape[-2:]) - local).abs().mean().item()
            assert error < 0.02, (b, k, error)
            assert wrong > 3 * error, (b, k, error, wrong)
            checked += 1
    assert checked == 12


def test_ctrlaug_needs_a_long_enough_video(videos):
    recipe = CtrlAugViews()
    assert recipe.min_num_frames == 64
    with pytest.raises(VideoDecodeError, match="too short"):
        sample(videos["short"], recipe)


# ----------------------------------------------------------------------------------------------------------
# supervised clips and evaluation views
# ----------------------------------------------------------------------------------------------------------
def test_clip_views_for_supervised_training(videos):
    recipe = ClipViews(clip_length=8, frame_strides=(2, 4), output_size=(32, 32))
    views = render(videos["index"], recipe, keys=range(4))
    assert views["pixel_values"].shape == (4, 1, 8, 3, 32, 32)
    steps = (views["frame_indices"][:, 0, 1:] - views["frame_indices"][:, 0, :-1]).unique().tolist()
    assert set(steps) <= {2, 4}
    short = sample(videos["short"], ClipViews(clip_length=8, frame_strides=(4,)))  # 20 frames < 8 x 4
    assert short["frame_indices"][0].tolist() == [min(4 * i, 19) for i in range(8)]
    tiny = sample(videos["short"], ClipViews(clip_length=32))  # shorter than one clip: last frame repeated
    assert tiny["frame_indices"][0, -1] == 19 and tiny["frame_indices"][0, 0] == 0


# ----------------------------------------------------------------------------------------------------------
# evaluation views
# ----------------------------------------------------------------------------------------------------------
def test_eval_views_ten_crops_of_uniform_clips(videos):
    recipe = EvalViews(
        num_clips=3,
        num_frames=4,
        frame_stride=2,
        spatial_crops="ten",
        resize_short_side=64,
        output_size=(56, 56),
    )
    views = render(videos["static"], recipe)  # 80 frames, 96x128
    assert views["pixel_values"].shape == (1, 30, 4, 3, 56, 56)
    starts = views["frame_indices"][0, ::10, 0].tolist()
    assert starts == [0, 37, 73]  # evenly from the first to the last possible start (80 - 7)
    assert views["frame_indices"][0, 0].tolist() == [0, 2, 4, 6]
    boxes = views["crop_boxes"][0, :10].numpy()
    side = 56 * 96 / 64  # the crop of a frame resized to short side 64, in source pixels
    np.testing.assert_allclose(boxes[:, 2] - boxes[:, 0], side, atol=1)
    np.testing.assert_allclose(boxes[[0, 3]], [[0, 0, side, side], [128 - side, 96 - side, 128, 96]], atol=1)
    assert views["flips"][0, :10].tolist() == [False] * 5 + [True] * 5
    pixels = views["pixel_values"][0]
    assert torch.equal(pixels[9], pixels[4].flip(-1))  # centre crop and its mirror
    assert (views["brightness"] == 1).all() and not views["gray"].any()


def test_eval_views_pad_short_videos(videos):
    recipe = EvalViews(num_clips=2, num_frames=16, frame_stride=2, resize_short_side=32, output_size=(32, 32))
    indices = sample(videos["short"], recipe)["frame_indices"]  # 20 frames < one 31-frame clip
    assert indices.max() == 19 and indices[0, 0] == 0


# ----------------------------------------------------------------------------------------------------------
# canvases, batching and configuration
# ----------------------------------------------------------------------------------------------------------
def test_fixed_canvas_keeps_boxes_in_source_pixels(videos):
    native = MLFOViews(crop=None, flip_prob=0.0, color=NO_COLOR, output_size=(48, 48))
    fixed = MLFOViews(crop=None, flip_prob=0.0, color=NO_COLOR, output_size=(48, 48), canvas_size=(40, 50))
    a, b = sample(videos["index"], native, key=1), sample(videos["index"], fixed, key=1)
    assert b["frames"].shape[1:3] == (40, 50)
    assert np.array_equal(a["crop_boxes"], b["crop_boxes"])  # the whole 64x64 source frame either way
    assert np.array_equal(b["canvas_boxes"][0], [0, 0, 50, 40])
    assert np.array_equal(a["frame_indices"], b["frame_indices"])
    # a 1080p-like source is downscaled at decode when no canvas is fixed
    big = MLFOViews(max_canvas_short_side=32)
    info = type("Info", (), {"height": 64, "width": 96, "num_frames": 40})
    assert big.canvas_for(info) == (32, 48)


def test_mixed_canvas_sizes_are_padded_without_changing_pixels(videos):
    recipe = MLFOViews()
    small = sample(videos["index"], recipe, key=0)
    large = sample(videos["static"], recipe, key=1)
    together = apply_views(collate_views([small, large]), recipe)["pixel_values"]
    alone = apply_views(collate_views([small]), recipe)["pixel_values"]
    assert torch.equal(together[0], alone[0])


def test_shared_collate_pickles_as_one_block_and_rebuilds_the_same_batch(videos):
    from multiprocessing.reduction import ForkingPickler

    recipe = MLFOViews()
    samples = [dict(sample(videos["index"], recipe, key=k), key=f"v{k}") for k in range(2)]
    private, shared = collate_views(samples, shared=False), collate_views(samples, shared=True)
    assert isinstance(shared, SharedBatch) and not isinstance(private, SharedBatch)
    block = shared.block.untyped_storage().data_ptr()
    for name, value in shared.items():
        if name != "keys":
            assert value.untyped_storage().data_ptr() == block and value.data_ptr() % 64 == 0, name
            assert value.dtype == private[name].dtype and torch.equal(value, private[name]), name
    shared["extra"] = torch.arange(3)  # not in the block: travels as usual
    sent = ForkingPickler.loads(ForkingPickler.dumps(shared))  # as a DataLoader worker sends it
    copied = pickle.loads(pickle.dumps(shared))  # by value
    assert copy.copy(shared).block is shared.block
    for rebuilt in (sent, copied):
        assert type(rebuilt) is dict and list(rebuilt) == list(shared)
        assert rebuilt["keys"] == ["v0", "v1"] and torch.equal(rebuilt["extra"], torch.arange(3))
        for name, value in private.items():
            assert rebuilt[name] == value if name == "keys" else torch.equal(rebuilt[name], value), name
    # only the largest entry stays in the shared block: keeping small ones must not keep the frames alive
    in_block = [n for n, v in sent.items() if torch.is_tensor(v) and v.untyped_storage().data_ptr() == block]
    assert in_block == ["frames"]
    shared["frames"][0, 0, 0, 0, 0] += 1  # the same memory, not a copy
    assert torch.equal(sent["frames"], shared["frames"])


def test_recipe_from_config_values():
    recipe = CtrlAugViews.from_dict(
        {"num_local_clips": 3, "local_crop": {"scale": [0.1, 0.4]}, "color": {"hue": 0.2}}
    )
    assert recipe.num_local_clips == 3 and recipe.local_crop.scale == (0.1, 0.4) and recipe.color.hue == 0.2
    assert recipe.view_names == ("global", "local_1", "local_2", "local_3")
    assert recipe.to_dict()["recipe"] == "CtrlAugViews"
    assert build_recipe("clip", frame_strides=[2]).frame_strides == (2,)
    with pytest.raises(ValueError, match="unknown view recipe"):
        build_recipe("simclr")
    with pytest.raises(ValueError, match="no field 'num_local_clip'; did you mean 'num_local_clips'"):
        CtrlAugViews.from_dict({"num_local_clip": 3})
    with pytest.raises(ValueError, match="color_mode"):
        MLFOViews(color_mode="fast")


def test_recipe_from_model_config():
    config = hf_vssl.MLFOConfig(num_frames=8, image_size=48)
    recipe = hf_vssl.METHODS["mlfo"].build_recipe(config, flip_prob=0.0)
    assert (recipe.clip_length, recipe.output_size, recipe.flip_prob) == (8, (48, 48), 0.0)
    # an override wins over the model's size
    assert MLFOViews.from_config(config, clip_length=4).clip_length == 4


# ----------------------------------------------------------------------------------------------------------
# stage 2 against per-pixel references
# ----------------------------------------------------------------------------------------------------------
def test_crop_resize_and_flip_match_the_canvas():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, 30, 40, 3), dtype=np.uint8)
    boxes = [[3, 2, 19, 14], [10, 5, 26, 17], [0, 0, 40, 30], [12, 7, 16, 10]]
    batch = manual_batch(frames, boxes, [False, True, False, False], [[0, 1], [2, 4], [3, 3], [1, 0]])
    pixels = apply_views(batch, MLFOViews(output_size=(12, 16), color_mode="fused"))["pixel_values"][0]
    # 16x12 boxes: no resampling, the pixels are the canvas slice (mirrored when flipped)
    assert np.array_equal(to_uint8(pixels[0]), frames[[0, 1], 2:14, 3:19])
    assert np.array_equal(to_uint8(pixels[1]), frames[[2, 4], 5:17, 10:26][:, :, ::-1])
    # resized boxes: antialiased bilinear, as torch's float reference (the CPU path rounds to integers)
    for v, (x0, y0, x1, y1) in ((2, boxes[2]), (3, boxes[3])):
        slots = batch["frame_slots"][0, v]
        crop = torch.from_numpy(frames[slots.numpy(), y0:y1, x0:x1]).permute(0, 3, 1, 2).double()
        reference = F.interpolate(crop, size=(12, 16), mode="bilinear", antialias=True, align_corners=False)
        got = torch.from_numpy(to_unit(pixels[v])).permute(0, 3, 1, 2) * 255
        assert (got - reference.clamp(0, 255)).abs().max() <= 1.0  # uint8 kernel: fixed-point weights


def test_per_view_cpu_path_equals_the_batched_path(videos):
    """On CPU stage 2 renders view by view (cache blocking); GPUs take one batched pass. Same result."""
    recipe = MLFOViews()
    batch = collate_views([sample(videos["index"], recipe, key) for key in range(3)])
    per_view = apply_views(batch, recipe)["pixel_values"]
    B, V, T = batch["frame_slots"].shape
    geometry = (batch["frames"], batch["frame_slots"], batch["canvas_boxes"], batch["flips"], (112, 112))
    params = {name: batch[name].flatten(0, 2) for name in (*COLOR_PARAMS[:-1],)}
    batched = render_color(resample_views(*geometry), params, "fused", recipe.gray_before_jitter)
    torch.testing.assert_close(per_view.flatten(0, 2), batched, atol=1e-5, rtol=0)
    # the float resize (GPUs) agrees with the uint8 resize (CPU) up to rounding
    as_float = resample_views(*geometry, integer=False)
    assert as_float.dtype == torch.float32
    assert (as_float - resample_views(*geometry).float()).abs().max() <= 1.5  # fixed-point weights, rounding


def reference_gray(x, channel):
    """Gray of frames [..., 3]: one RGB channel repeated, or luma when ``channel`` is -1."""
    value = x[..., channel] if channel >= 0 else x @ LUMA
    return np.repeat(value[..., None], 3, axis=-1)


def reference_sequential(image, b, c, s, h, order, gray, channel, gray_before):
    """torchvision-style colour jitter of one frame [H, W, 3] in [0, 1], pixel by pixel."""
    x = image.astype(np.float64).copy()

    if gray and gray_before:
        x = reference_gray(x, channel)
    for op in order:
        if op == 0:
            x = np.clip(b * x, 0, 1)
        elif op == 1:
            x = np.clip(c * x + (1 - c) * (x @ LUMA).mean(), 0, 1)
        elif op == 2:
            x = np.clip(s * x + (1 - s) * (x @ LUMA)[..., None], 0, 1)
        else:
            for i, j in np.ndindex(x.shape[:2]):
                hue, sat, val = colorsys.rgb_to_hsv(*x[i, j])
                x[i, j] = colorsys.hsv_to_rgb((hue + h) % 1.0, sat, val)
    if gray and not gray_before:
        x = reference_gray(x, channel)
    return x


def reference_fused(image, b, c, s, h, order, gray, channel, gray_before):
    """The fused chain of one frame: the same operations without intermediate clamps, hue as a YIQ rotation."""
    x = image.astype(np.float64).copy()
    yiq = np.array([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]])
    theta = -2 * math.pi * h
    rotation = np.array(
        [[1, 0, 0], [0, math.cos(theta), -math.sin(theta)], [0, math.sin(theta), math.cos(theta)]]
    )
    hue_matrix = np.linalg.inv(yiq) @ rotation @ yiq

    if gray and gray_before:
        x = reference_gray(x, channel)
    for op in order:
        if op == 0:
            x = b * x
        elif op == 1:
            x = c * x + (1 - c) * (x @ LUMA).mean()
        elif op == 2:
            x = s * x + (1 - s) * (x @ LUMA)[..., None]
        else:
            x = x @ hue_matrix.T
    if gray and not gray_before:
        x = reference_gray(x, channel)
    return np.clip(x, 0, 1)


def random_params(n: int, seed: int, strength: float = 0.5, hue: float = 0.25) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    return {
        "brightness": torch.tensor(rng.uniform(1 - strength, 1 + strength, n), dtype=torch.float32),
        "contrast": torch.tensor(rng.uniform(1 - strength, 1 + strength, n), dtype=torch.float32),
        "saturation": torch.tensor(rng.uniform(1 - strength, 1 + strength, n), dtype=torch.float32),
        "hue": torch.tensor(rng.uniform(-hue, hue, n), dtype=torch.float32),
        "gray": torch.tensor(rng.random(n) < 0.3),
        "gray_channel": torch.tensor(rng.integers(-1, 3, n)),
        "jitter_order": torch.tensor(np.stack([rng.permutation(4) for _ in range(n)])),
    }


@pytest.mark.parametrize(
    "mode, reference", [("sequential", reference_sequential), ("fused", reference_fused)]
)
@pytest.mark.parametrize("gray_before", [False, True])
def test_color_jitter_matches_per_pixel_reference(mode, reference, gray_before):
    rng = np.random.default_rng(1)
    n = 12
    images = rng.integers(0, 256, (n, 5, 6, 3), dtype=np.uint8)
    params = random_params(n, seed=2)
    clips = torch.from_numpy(images).permute(0, 3, 1, 2)
    got = to_unit(render_color(clips, params, mode=mode, gray_before_jitter=gray_before))
    for i in range(n):
        p = {name: value[i].tolist() for name, value in params.items()}
        expected = reference(
            images[i] / 255.0,
            p["brightness"],
            p["contrast"],
            p["saturation"],
            p["hue"],
            p["jitter_order"],
            p["gray"],
            p["gray_channel"],
            gray_before,
        )
        np.testing.assert_allclose(got[i], expected, atol=2e-5, err_msg=f"frame {i}")


@pytest.mark.parametrize("op", ["brightness", "contrast", "saturation", "hue"])
def test_single_color_operations(op):
    """Each operation alone, in both modes, against its definition (no clamping involved for these values)."""
    rng = np.random.default_rng(3)
    images = rng.integers(60, 190, (4, 4, 5, 3), dtype=np.uint8)
    params = identity_params(4)
    value = torch.tensor([0.7, 1.2, 0.9, 1.1]) if op != "hue" else torch.tensor([0.1, -0.2, 0.3, -0.05])
    params[op] = value
    x = images / 255.0
    for mode in ("sequential", "fused"):
        got = to_unit(render_color(torch.from_numpy(images).permute(0, 3, 1, 2), params, mode=mode))
        for i, f in enumerate(value.tolist()):
            if op == "brightness":
                expected = np.clip(f * x[i], 0, 1)
            elif op == "contrast":
                expected = np.clip(f * x[i] + (1 - f) * (x[i] @ LUMA).mean(), 0, 1)
            elif op == "saturation":
                expected = np.clip(f * x[i] + (1 - f) * (x[i] @ LUMA)[..., None], 0, 1)
            elif mode == "sequential":
                expected = reference_sequential(x[i], 1, 1, 1, f, [3], False, -1, False)
            else:
                expected = reference_fused(x[i], 1, 1, 1, f, [3], False, -1, False)
            np.testing.assert_allclose(got[i], expected, atol=2e-5, err_msg=f"{op} {mode} {i}")
    if op == "hue":  # both hue definitions turn the colour the same way (red towards yellow for h > 0)
        red = torch.tensor([200, 30, 30], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 2, 2).contiguous()
        shift = identity_params(1)
        shift["hue"] = torch.tensor([0.08])
        for mode in ("sequential", "fused"):
            r, g, b = to_unit(render_color(red, shift, mode=mode))[0, 0, 0]
            assert g > 30 / 255 + 0.05 and b < 30 / 255 + 0.02, mode


def test_fused_and_sequential_agree_without_clamping():
    rng = np.random.default_rng(4)
    images = rng.integers(90, 160, (16, 6, 6, 3), dtype=np.uint8)
    params = random_params(16, seed=5, strength=0.15, hue=0.0)
    params["gray"][:] = False
    clips = torch.from_numpy(images).permute(0, 3, 1, 2)
    fused = render_color(clips, params, mode="fused")
    sequential = render_color(clips, params, mode="sequential")
    torch.testing.assert_close(fused, sequential, atol=1e-5, rtol=0)


def test_gray_and_normalisation():
    rng = np.random.default_rng(6)
    images = rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    params = identity_params(3)
    params["gray"] = torch.tensor([False, True, True])
    params["gray_channel"] = torch.tensor([-1, -1, 2])
    for mode in ("fused", "sequential"):
        got = to_unit(render_color(torch.from_numpy(images).permute(0, 3, 1, 2), params, mode=mode))
        np.testing.assert_allclose(got[0], images[0] / 255, atol=1e-6)  # identity: just normalised
        np.testing.assert_allclose(got[1], np.repeat((images[1] / 255 @ LUMA)[..., None], 3, -1), atol=1e-6)
        np.testing.assert_allclose(got[2], np.repeat(images[2][..., 2:3] / 255, 3, -1), atol=1e-6)


def blur_reference(x: np.ndarray, sigma: float) -> np.ndarray:
    """Direct 2-D Gaussian blur of ``x`` ``[C, H, W]`` in float64: radius ``min(ceil(3 sigma), side - 1)`` per
    axis, weights normalised over the taps, reflect padding (``-i -> i``, ``size - 1 + i -> size - 1 - i``)."""
    C, H, W = x.shape

    def kernel(size):
        radius = min(math.ceil(3 * sigma), size - 1)
        taps = np.arange(-radius, radius + 1)
        weights = np.exp(-0.5 * (taps / sigma) ** 2)
        return taps, weights / weights.sum()

    reflect = lambda i, size: abs(i) if i < 0 else (2 * (size - 1) - i if i >= size else i)  # noqa: E731
    (taps_h, k_h), (taps_w, k_w) = kernel(H), kernel(W)
    expected = np.zeros_like(x, dtype=np.float64)
    for i, j in np.ndindex(H, W):
        for di, wi in zip(taps_h, k_h):
            for dj, wj in zip(taps_w, k_w):
                expected[:, i, j] += wi * wj * x[:, reflect(i + di, H), reflect(j + dj, W)]
    return expected


def test_gaussian_blur_matches_direct_convolution():
    rng = np.random.default_rng(7)
    images = torch.tensor(rng.random((2, 3, 9, 11)), dtype=torch.float32)
    sigma = torch.tensor([0.6, 1.3])  # each image its own kernel, whatever the batch holds
    got = gaussian_blur(images, sigma).numpy()
    for n in range(2):
        np.testing.assert_allclose(got[n], blur_reference(images[n].numpy(), sigma[n].item()), atol=1e-5)
    for shape in ((2, 3, 4), (1, 1, 5)):  # radius 3 clipped to 2 and 3; a one-pixel axis is left alone
        tiny = torch.tensor(rng.random((1, *shape)), dtype=torch.float32)
        np.testing.assert_allclose(
            gaussian_blur(tiny, 1.0)[0].numpy(), blur_reference(tiny[0].numpy(), 1.0), atol=1e-5
        )
    # sigma 0 leaves an image alone, a scalar sigma blurs all, and out=images blurs in place
    torch.testing.assert_close(gaussian_blur(images, torch.tensor([0.0, 1.3]))[0], images[0], rtol=0, atol=0)
    torch.testing.assert_close(gaussian_blur(images, 1.3), gaussian_blur(images, torch.tensor([1.3, 1.3])))
    in_place = images.clone()
    gaussian_blur(in_place, sigma, out=in_place)
    np.testing.assert_allclose(in_place.numpy(), got, atol=1e-6)


def test_blur_is_applied_to_the_views_that_drew_it(videos):
    blurry = HDCViews(color=ColorSpec(blur_prob=0.5, blur_sigma=(0.5, 1.5)))
    sharp = HDCViews(color=NO_COLOR)  # same draws (frames, boxes, flips), no blur
    blurred = render(videos["index"], blurry, keys=range(8))
    plain = render(videos["index"], sharp, keys=range(8))["pixel_values"]
    sigma = blurred["blur_sigma"]
    assert (sigma[..., 0] > 0).any() and (sigma[..., 0] == 0).any()
    for b, v in np.ndindex(8, 3):
        got = blurred["pixel_values"][b, v]
        if sigma[b, v, 0] > 0:
            expected = gaussian_blur(plain[b, v], sigma[b, v])
            torch.testing.assert_close(got, expected, atol=1e-3, rtol=0)  # float32 summation order
        else:
            assert torch.equal(got, plain[b, v])
