"""hf_vssl's image / video processors and pipelines, on real encoded videos written with PyAV.

Covers: the evaluation recipe's clip sampling over whole files (MP4/h264 and WebM/VP9, whose header stores no
frame count), equivalence to a slow per-frame PIL reference of its crop-then-resize, every input layout, clear errors naming bad files, save/load and
the Auto classes, ``pipeline("video-classification")`` in-process, through the image-processor fallback and via
remote code in a process where hf_vssl cannot be imported, and the ``"video-feature-extraction"`` pipeline
against a direct model call.
"""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

# module-level Auto classes: without torchvision, transformers' top-level names for them can be placeholders
from transformers.models.auto.image_processing_auto import AutoImageProcessor
from transformers.models.auto.video_processing_auto import AutoVideoProcessor

import hf_vssl
from hf_vssl import image_processing_vssl
from hf_vssl.image_processing_vssl import VideoSSLImageProcessor
from hf_vssl.pipelines import VIDEO_FEATURE_EXTRACTION, VideoFeatureExtractionPipeline, register_pipelines
from hf_vssl.video_processing_vssl import (
    VideoDecodeError,
    VideoSSLVideoProcessor,
    clip_frame_indices,
    read_video,
)

from .conftest import tiny_config
from .video_factory import read_index, smooth_frames, write_bad_files, write_index_video, write_video

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
LABELS = {0: "walk", 1: "run", 2: "jump"}
NUM_FRAMES = 8  # the tiny model's clip length
SIZE = 32  # the tiny model's resolution
STRIDE = 2  # the training stride
CLIPS = 2  # clips per video
CODECS = {"mp4": "libx264", "webm": "libvpx-vp9"}


# ----------------------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def index_videos(tmp_path_factory):
    """40-frame videos whose frame i shows the number i: {"mp4": h264 path, "webm": vp9 path}."""
    folder = tmp_path_factory.mktemp("index_videos")
    return {
        ext: write_index_video(folder / f"index.{ext}", num_frames=40, size=(64, 80), codec=codec, gop=8)
        for ext, codec in CODECS.items()
    }


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Ordinary-looking videos of different lengths and sizes: {"mp4": path, "webm": path}."""
    folder = tmp_path_factory.mktemp("clips")
    return {
        "mp4": write_video(folder / "a.mp4", smooth_frames(21, (48, 64), seed=1), codec="libx264"),
        "webm": write_video(folder / "b.webm", smooth_frames(13, (50, 40), seed=2), codec="libvpx-vp9"),
    }


def _processors():
    return (
        VideoSSLVideoProcessor(
            num_frames=NUM_FRAMES,
            frame_stride=STRIDE,
            num_clips=CLIPS,
            size={"shortest_edge": SIZE},
            crop_size=SIZE,
        ),
        VideoSSLImageProcessor(size={"shortest_edge": SIZE}, crop_size=SIZE),
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny MLFO video classifier saved with both processors, as a pushed checkpoint folder is."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("checkpoint")
    model = hf_vssl.MLFOForVideoClassification(tiny_config("mlfo", id2label=LABELS)).eval()
    model.save_pretrained(folder)
    for processor in _processors():
        processor.save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------------------------------------
# Frame sampling and decoding
# ----------------------------------------------------------------------------------------------------------
def test_clip_frame_indices_spread_clips_at_the_training_stride():
    # clips keep the stride (the model's playback rate); their starts go from the first to the last possible one
    assert clip_frame_indices(40, 4, 2, 3).tolist() == [[0, 2, 4, 6], [17, 19, 21, 23], [33, 35, 37, 39]]
    assert clip_frame_indices(40, 4, 2, 1).tolist() == [[16, 18, 20, 22]]  # one clip: centred
    assert clip_frame_indices(16, 16, 1, 1).tolist() == [list(range(16))]
    assert clip_frame_indices(5, 4, 2, 2).tolist() == [[0, 2, 4, 4]] * 2  # too short: the last frame repeats
    with pytest.raises(ValueError, match="0 frames"):
        clip_frame_indices(0, 8)
    with pytest.raises(ValueError, match="frame_stride"):
        clip_frame_indices(10, 8, 0)


@pytest.mark.parametrize("ext", list(CODECS))
def test_read_video_samples_clips_over_the_whole_file(index_videos, ext):
    path = index_videos[ext]
    clips = read_video(path, 4, frame_stride=2, num_clips=3)
    assert clips.shape == (3, 4, 64, 80, 3)
    assert (
        read_index(clips.reshape(12, 64, 80, 3)).tolist() == clip_frame_indices(40, 4, 2, 3).ravel().tolist()
    )
    every_frame = read_video(path)
    assert every_frame.shape == (40, 64, 80, 3) and every_frame.dtype == np.uint8
    assert read_index(every_frame).tolist() == list(range(40))


def test_read_video_accepts_bytes_and_file_objects(index_videos):
    data = index_videos["webm"].read_bytes()
    expected = read_video(index_videos["webm"], 5)
    np.testing.assert_array_equal(read_video(data, 5), expected)
    with open(index_videos["webm"], "rb") as handle:
        np.testing.assert_array_equal(read_video(handle, 5), expected)


def test_truncated_video_is_sampled_over_the_frames_that_decode(tmp_path):
    # faststart MP4 cut in half: the header still announces 60 frames, only the first part decodes
    truncated = write_bad_files(tmp_path)["truncated"]
    decodable = read_index(read_video(truncated)).tolist()
    assert 0 < len(decodable) < 60 and decodable == list(range(len(decodable)))
    sampled = read_index(read_video(truncated, 8)[0]).tolist()
    assert sampled == clip_frame_indices(len(decodable), 8)[0].tolist()


@pytest.mark.parametrize(
    "kind", ["missing", "empty", "text", "audio_only", "truncated_no_index", "directory"]
)
def test_bad_video_files_raise_errors_naming_the_file(tmp_path, kind):
    bad_files = write_bad_files(tmp_path / "bad")
    bad_files["missing"] = tmp_path / "no_such_video.mp4"
    bad_files["directory"] = tmp_path / "bad"
    path = bad_files[kind]
    processor = VideoSSLVideoProcessor()
    with pytest.raises((ValueError, OSError), match=re.escape(str(path))) as caught:
        processor(str(path), return_tensors="pt")
    expected = {"missing": FileNotFoundError, "directory": IsADirectoryError}.get(kind, VideoDecodeError)
    assert isinstance(caught.value, expected)
    # ... also inside a batch with a good video
    good = write_index_video(tmp_path / "good.mp4", num_frames=4)
    with pytest.raises((ValueError, OSError), match=re.escape(str(path))):
        processor([good, path])


def test_empty_bytes_are_rejected():
    with pytest.raises(VideoDecodeError, match="0 bytes"):
        read_video(b"", 4)


# ----------------------------------------------------------------------------------------------------------
# The clip transform
# ----------------------------------------------------------------------------------------------------------
def _pil_reference(video: np.ndarray, size: dict, crop: int | None) -> np.ndarray:
    """The slow way, one PIL image at a time, as the evaluation recipe reads: the crop of the frame resized by
    `size`, cut in source pixels (rounded to whole pixels) and resized alone (bilinear); rescale, normalise."""
    frames = []
    for array in video:
        image = Image.fromarray(array)
        width, height = image.size
        if crop is None:
            if "shortest_edge" in size:
                short = size["shortest_edge"]
                if height <= width:
                    out_height, out_width = short, int(short * width / height)
                else:
                    out_height, out_width = int(short * height / width), short
            else:
                out_height, out_width = size["height"], size["width"]
            box = (0, 0, width, height)
        else:
            if "shortest_edge" in size:
                scale_y = scale_x = size["shortest_edge"] / min(height, width)
            else:
                scale_y, scale_x = size["height"] / height, size["width"] / width
            box_width, box_height = crop / scale_x, crop / scale_y
            left, top = (width - box_width) / 2, (height - box_height) / 2
            box = tuple(int(np.floor(v + 0.5)) for v in (left, top, left + box_width, top + box_height))
            out_height = out_width = crop
        image = image.crop(box).resize((out_width, out_height), Image.BILINEAR)
        pixels = np.asarray(image, dtype=np.float64) / 255.0
        frames.append(((pixels - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1))
    return np.stack(frames)


@pytest.mark.parametrize(
    "shape, size, crop",
    [
        ((6, 90, 120), {"shortest_edge": 64}, 56),  # shrink, landscape
        ((6, 121, 77), {"shortest_edge": 50}, 40),  # shrink, portrait, odd sizes
        ((6, 30, 40), {"shortest_edge": 64}, 48),  # enlarge
        ((6, 64, 64), {"shortest_edge": 64}, 64),  # identity
        ((6, 90, 120), {"height": 45, "width": 70}, 40),  # exact size, then a crop
        ((6, 90, 120), {"height": 45, "width": 70}, None),  # exact size, no crop
    ],
)
def test_processor_matches_a_per_frame_pil_reference(shape, size, crop):
    video = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    processor = VideoSSLImageProcessor(size=size, crop_size=crop or 1, do_center_crop=crop is not None)
    pixel_values = processor(video, return_tensors="pt")["pixel_values"]
    assert pixel_values.dtype == torch.float32
    reference = _pil_reference(video, size, crop)
    assert pixel_values.shape == (1, *reference.shape)
    # both round each resized frame to uint8, with their own fixed-point kernels: at most 1 grey level apart
    difference = np.abs(pixel_values[0].numpy() - reference) * IMAGENET_STD[None, :, None, None] * 255
    assert difference.max() < 1.01, difference.max()


def test_clip_is_resized_in_one_interpolate_call(monkeypatch):
    calls = []
    interpolate = image_processing_vssl.F.interpolate

    def counting_interpolate(input, *args, **kwargs):
        calls.append(tuple(input.shape))
        return interpolate(input, *args, **kwargs)

    monkeypatch.setattr(image_processing_vssl.F, "interpolate", counting_interpolate)
    video = np.zeros((16, 72, 96, 3), dtype=np.uint8)
    VideoSSLImageProcessor()(video, return_tensors="pt")
    # every frame at once, not a loop over frames; only the crop's region, 112 * 72 / 128 = 63 pixels square
    assert calls == [(16, 3, 63, 63)]


def _layouts(decoded: np.ndarray) -> dict:
    """One decoded video [T, H, W, C] uint8 in every input layout (value, or (value, call kwargs))."""
    tchw = torch.from_numpy(decoded).permute(0, 3, 1, 2)
    return {
        "THWC array": decoded,
        "TCHW tensor": tchw,
        "TCHW array, explicit layout": (tchw.numpy(), {"input_data_format": "channels_first"}),
        "PIL frames": [Image.fromarray(frame) for frame in decoded],
        "HWC frames": list(decoded),
        "float THWC": (decoded.astype(np.float32), {}),
    }


def _tolerance(layout: str) -> dict:
    # uint8 frames are resized in uint8 (fixed-point weights, rounded, as the data engine on CPU), floats in
    # float: about one grey level apart at most (1.005 measured on the index video's hard edges)
    return {"rtol": 0, "atol": 1.5 / 255 / min(IMAGENET_STD)} if layout.startswith("float") else {}


def test_every_input_layout_gives_the_same_pixel_values(index_videos):
    video_processor, image_processor = _processors()
    path = index_videos["mp4"]
    expected = video_processor(str(path), return_tensors="pt")["pixel_values"]
    assert expected.shape == (1, CLIPS, NUM_FRAMES, 3, SIZE, SIZE)
    layouts = {"path object": path, "bytes": path.read_bytes(), **_layouts(read_video(path))}
    for name, value in layouts.items():
        value, kwargs = value if isinstance(value, tuple) else (value, {})
        actual = video_processor(value, return_tensors="pt", **kwargs)["pixel_values"]
        torch.testing.assert_close(actual, expected, msg=f"video processor, {name}", **_tolerance(name))
    # the image processor takes the frames as chosen: one clip, as the video processor's one-clip views
    one_clip = video_processor(str(path), num_clips=1, return_tensors="pt")["pixel_values"]
    assert one_clip.shape == (1, NUM_FRAMES, 3, SIZE, SIZE)
    for name, value in _layouts(read_video(path, NUM_FRAMES, STRIDE)[0]).items():
        value, kwargs = value if isinstance(value, tuple) else (value, {})
        actual = image_processor(value, return_tensors="pt", **kwargs)["pixel_values"]
        torch.testing.assert_close(actual, one_clip, msg=f"image processor, {name}", **_tolerance(name))
    gray = video_processor(read_video(path)[..., :1], return_tensors="pt")["pixel_values"]
    assert gray.shape == expected.shape  # grayscale is repeated to RGB


def test_batches_shapes_and_return_types(clips):
    video_processor, image_processor = _processors()
    paths = [clips["mp4"], clips["webm"]]
    batch = video_processor(paths, return_tensors="pt")["pixel_values"]
    assert batch.shape == (2, CLIPS, NUM_FRAMES, 3, SIZE, SIZE) and batch.dtype == torch.float32
    for i, path in enumerate(paths):
        torch.testing.assert_close(video_processor(path, return_tensors="pt")["pixel_values"][0], batch[i])
    arrays = [read_video(path, NUM_FRAMES, STRIDE)[0] for path in paths]
    torch.testing.assert_close(
        image_processor(arrays, return_tensors="pt")["pixel_values"],
        video_processor(paths, num_clips=1, return_tensors="pt")["pixel_values"],
    )
    as_numpy = video_processor(paths, return_tensors="np")["pixel_values"]
    assert isinstance(as_numpy, np.ndarray) and as_numpy.shape == tuple(batch.shape)
    as_list = video_processor(paths, do_sample_frames=False)["pixel_values"]  # every frame, lengths differ
    assert [tuple(clip.shape) for clip in as_list] == [(21, 3, SIZE, SIZE), (13, 3, SIZE, SIZE)]
    with pytest.raises(ValueError, match="different shapes"):
        video_processor(paths, do_sample_frames=False, return_tensors="pt")
    override = video_processor(
        paths[0], num_frames=4, crop_size={"height": 24, "width": 30}, return_tensors="pt"
    )
    assert override["pixel_values"].shape == (1, CLIPS, 4, 3, 24, 30)
    ten = video_processor(paths[0], spatial_crops="ten", return_tensors="pt")["pixel_values"]
    assert ten.shape == (1, CLIPS * 10, NUM_FRAMES, 3, SIZE, SIZE)  # clip-major: 10 crops of clip 0, then 1
    torch.testing.assert_close(ten[0, 9], ten[0, 4].flip(-1))  # the centre crop and its mirror
    five_d = video_processor(np.stack([read_video(paths[0])] * 2), return_tensors="pt")
    torch.testing.assert_close(five_d["pixel_values"], batch[[0, 0]])


def test_array_sampling_matches_file_sampling(index_videos):
    video_processor, _ = _processors()
    every_frame = read_video(index_videos["webm"])
    from_file = video_processor(index_videos["webm"], return_tensors="pt")["pixel_values"]
    from_array = video_processor(every_frame, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(from_array, from_file)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"size": {"longest_edge": 3}}, "size"),
        ({"size": 0}, "size"),
        ({"crop_size": {"height": 4}}, "crop_size"),
        ({"resample": 1}, "resample"),
        ({"image_std": [0.2, 0.0, 0.2]}, "image_std"),
        ({"num_frames": -2}, "num_frames"),
        ({"num_clips": 0}, "num_clips"),
        ({"frame_stride": 1.5}, "frame_stride"),
        ({"spatial_crops": "four"}, "spatial_crops"),
    ],
)
def test_bad_parameters_are_rejected_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VideoSSLVideoProcessor(**kwargs)
    with pytest.raises(ValueError, match=message):
        VideoSSLVideoProcessor()(np.zeros((4, 8, 8, 3), dtype=np.uint8), **kwargs)


def test_bad_inputs_are_rejected_clearly(index_videos):
    video_processor, image_processor = _processors()
    with pytest.raises(ValueError, match="decoded frames"):
        image_processor(str(index_videos["mp4"]))
    with pytest.raises(ValueError, match="channel axis"):
        video_processor(np.zeros((4, 8, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="same shape"):
        image_processor([np.zeros((8, 8, 3), np.uint8), np.zeros((9, 8, 3), np.uint8)])
    with pytest.raises(ValueError, match="dtype"):
        video_processor(np.zeros((4, 8, 8, 3), dtype=bool))
    with pytest.raises(ValueError, match="empty"):
        video_processor([])


# ----------------------------------------------------------------------------------------------------------
# Saving, loading and the Auto classes
# ----------------------------------------------------------------------------------------------------------
def test_save_pretrained_ships_code_and_auto_map(tmp_path, clips):
    video_processor, image_processor = _processors()
    video_processor.save_pretrained(tmp_path)
    image_processor.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {
        "video_preprocessor_config.json",
        "preprocessor_config.json",
        "video_processing_vssl.py",
        "video_decoding.py",
        "image_processing_vssl.py",
    }
    video_config = json.loads((tmp_path / "video_preprocessor_config.json").read_text())
    image_config = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert video_config["auto_map"] == {"AutoVideoProcessor": "video_processing_vssl.VideoSSLVideoProcessor"}
    assert image_config["auto_map"] == {"AutoImageProcessor": "image_processing_vssl.VideoSSLImageProcessor"}
    assert video_config["video_processor_type"] == "VideoSSLVideoProcessor"
    assert image_config["image_processor_type"] == "VideoSSLImageProcessor"
    assert video_config["num_frames"] == NUM_FRAMES and video_config["size"] == {"shortest_edge": SIZE}
    assert (video_config["num_clips"], video_config["frame_stride"], video_config["spatial_crops"]) == (
        CLIPS,
        STRIDE,
        "center",
    )

    reloaded = VideoSSLVideoProcessor.from_pretrained(tmp_path)
    expected = video_processor(clips["mp4"], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(reloaded(clips["mp4"], return_tensors="pt")["pixel_values"], expected)
    assert VideoSSLVideoProcessor.from_pretrained(tmp_path, num_frames=4).num_frames == 4
    assert VideoSSLImageProcessor.from_pretrained(tmp_path).to_dict() == image_processor.to_dict()


def test_importing_hf_vssl_registers_processors_and_pipeline(checkpoint):
    # what `import hf_vssl` must set up: Auto classes resolve the processors without trust_remote_code ...
    assert type(AutoImageProcessor.from_pretrained(checkpoint)) is VideoSSLImageProcessor
    assert type(AutoVideoProcessor.from_pretrained(checkpoint)) is VideoSSLVideoProcessor
    # ... and the feature-extraction task exists
    from transformers.pipelines import PIPELINE_REGISTRY

    assert (
        PIPELINE_REGISTRY.supported_tasks[VIDEO_FEATURE_EXTRACTION]["impl"] is VideoFeatureExtractionPipeline
    )


def test_checkpoint_declares_the_feature_pipeline_for_processes_without_hf_vssl(checkpoint):
    declared = json.loads((checkpoint / "config.json").read_text())["custom_pipelines"]
    assert declared == {
        VIDEO_FEATURE_EXTRACTION: {
            "impl": "pipelines.VideoFeatureExtractionPipeline",
            "pt": ["AutoModel"],
            "type": "video",
        }
    }
    assert (checkpoint / "pipelines.py").is_file()
    # with hf_vssl imported the registry serves the task: no trust_remote_code needed, the local class runs
    assert not hasattr(hf_vssl.MLFOConfig.from_pretrained(checkpoint), "custom_pipelines")
    assert type(pipeline(VIDEO_FEATURE_EXTRACTION, model=str(checkpoint))) is VideoFeatureExtractionPipeline


def test_top_level_auto_video_processor_needs_torchvision_the_module_class_does_not(checkpoint):
    # What the README states: transformers' top-level `AutoVideoProcessor` is a placeholder without torchvision;
    # the class in its module (re-exported as hf_vssl.AutoVideoProcessor) loads hf_vssl's processor either way.
    import importlib.util

    import transformers

    assert hf_vssl.AutoVideoProcessor is AutoVideoProcessor
    assert type(hf_vssl.AutoVideoProcessor.from_pretrained(checkpoint)) is VideoSSLVideoProcessor
    if importlib.util.find_spec("torchvision") is None:
        with pytest.raises(ImportError, match="Torchvision"):
            transformers.AutoVideoProcessor.from_pretrained(checkpoint)
    else:
        assert type(transformers.AutoVideoProcessor.from_pretrained(checkpoint)) is VideoSSLVideoProcessor
    # without torchvision too: the image processor and AutoProcessor from the top level
    assert type(transformers.AutoImageProcessor.from_pretrained(checkpoint)) is VideoSSLImageProcessor
    assert type(transformers.AutoProcessor.from_pretrained(checkpoint)) is VideoSSLImageProcessor


def test_register_pipelines_is_idempotent(caplog):
    register_pipelines()
    with caplog.at_level("WARNING"):
        register_pipelines()
    assert "already registered" not in caplog.text


# ----------------------------------------------------------------------------------------------------------
# pipeline("video-classification")
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", list(CODECS))
def test_video_classification_pipeline_in_process(checkpoint, clips, ext):
    classifier = pipeline("video-classification", model=str(checkpoint))
    assert isinstance(classifier.video_processor, VideoSSLVideoProcessor)
    predictions = classifier(str(clips[ext]))
    assert {p["label"] for p in predictions} == set(LABELS.values())
    assert sum(p["score"] for p in predictions) == pytest.approx(1.0, abs=1e-5)
    # the pipeline's scores are the model's softmax on the processor's pixel_values
    with torch.no_grad():
        pixel_values = classifier.video_processor(clips[ext], return_tensors="pt")["pixel_values"]
        probabilities = classifier.model(pixel_values).logits.softmax(-1)[0]
    top = max(predictions, key=lambda p: p["score"])
    label2id = {label: i for i, label in LABELS.items()}
    assert top["score"] == pytest.approx(probabilities.max().item(), abs=1e-5)
    assert label2id[top["label"]] == probabilities.argmax().item()
    batch = classifier([str(clips["mp4"]), str(clips["webm"])], batch_size=2, top_k=1)
    assert [len(result) for result in batch] == [1, 1]


def test_video_classification_pipeline_image_processor_fallback(checkpoint, clips):
    # no video processor: transformers decodes the first num_frames frames itself and calls the image processor
    classifier_model = hf_vssl.MLFOForVideoClassification.from_pretrained(checkpoint)
    _, image_processor = _processors()
    classifier = pipeline("video-classification", model=classifier_model, image_processor=image_processor)
    assert classifier.video_processor is None
    predictions = classifier(str(clips["webm"]))
    assert {p["label"] for p in predictions} == set(LABELS.values())
    frames = read_video(clips["webm"])[:NUM_FRAMES]  # what the pipeline decodes on this path
    with torch.no_grad():
        probabilities = classifier_model(**image_processor(list(frames), return_tensors="pt")).logits.softmax(
            -1
        )
    assert max(p["score"] for p in predictions) == pytest.approx(probabilities.max().item(), abs=1e-5)


def test_remote_code_pipeline_without_hf_vssl(checkpoint, clips, tmp_path, no_hf_vssl_runner):
    # expected values, computed here with hf_vssl
    video_processor, image_processor = _processors()
    model = hf_vssl.MLFOForVideoClassification.from_pretrained(checkpoint)
    expected = {}
    with torch.no_grad():
        for ext, path in clips.items():
            pixel_values = video_processor(path, return_tensors="pt")["pixel_values"]
            expected[ext] = {"pixel_values": pixel_values, "probs": model(pixel_values).logits.softmax(-1)[0]}
    with (
        torch.no_grad()
    ):  # the feature pipeline's embedding: the encoder's pooled feature over the same views
        encoder = hf_vssl.MLFOModel.from_pretrained(checkpoint)
        expected["embedding"] = encoder(expected["mp4"]["pixel_values"]).pooler_output[0]
    torch.save(expected, tmp_path / "expected.pt")
    frames = list(read_video(clips["mp4"], NUM_FRAMES)[0])
    expected_images = image_processor(frames, return_tensors="pt")["pixel_values"]
    torch.save(expected_images, tmp_path / "expected_images.pt")
    np.save(tmp_path / "frames.npy", np.stack(frames))

    result = no_hf_vssl_runner(
        f"""
        import numpy as np, torch
        from transformers import pipeline
        from transformers.models.auto.image_processing_auto import AutoImageProcessor
        from transformers.models.auto.video_processing_auto import AutoVideoProcessor

        checkpoint = {str(checkpoint)!r}
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        videos = {{"mp4": {str(clips["mp4"])!r}, "webm": {str(clips["webm"])!r}}}

        video_processor = AutoVideoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
        image_processor = AutoImageProcessor.from_pretrained(checkpoint, trust_remote_code=True)
        for processor in (video_processor, image_processor):
            assert type(processor).__module__.startswith("transformers_modules."), type(processor).__module__
        for ext, path in videos.items():
            pixel_values = video_processor(path, return_tensors="pt")["pixel_values"]
            torch.testing.assert_close(pixel_values, expected[ext]["pixel_values"])
        frames = list(np.load({str(tmp_path / "frames.npy")!r}))
        torch.testing.assert_close(
            image_processor(frames, return_tensors="pt")["pixel_values"],
            torch.load({str(tmp_path / "expected_images.pt")!r}),
        )

        classifier = pipeline("video-classification", model=checkpoint, trust_remote_code=True)
        assert type(classifier.video_processor).__name__ == "VideoSSLVideoProcessor"
        assert type(classifier.model).__module__.startswith("transformers_modules.")
        labels = {sorted(LABELS.values())!r}
        for ext, path in videos.items():
            predictions = classifier(path)
            assert sorted(p["label"] for p in predictions) == labels, predictions
            top = max(p["score"] for p in predictions)
            assert abs(top - expected[ext]["probs"].max().item()) < 1e-5, (top, expected[ext]["probs"])
        # the task is unknown to this process: config.json's custom_pipelines declares it, pipelines.py runs it
        extractor = pipeline("video-feature-extraction", model=checkpoint, trust_remote_code=True)
        assert type(extractor).__module__.startswith("transformers_modules."), type(extractor).__module__
        torch.testing.assert_close(extractor(videos["mp4"], return_tensors=True), expected["embedding"])
        print("remote code OK")
        """,
        env={"HF_MODULES_CACHE": str(tmp_path / "modules")},
    )
    assert "remote code OK" in result.stdout


# ----------------------------------------------------------------------------------------------------------
# pipeline("video-feature-extraction")
# ----------------------------------------------------------------------------------------------------------
def test_feature_extraction_pipeline_matches_a_direct_model_call(checkpoint, clips):
    extractor = pipeline(VIDEO_FEATURE_EXTRACTION, model=str(checkpoint))
    assert isinstance(extractor, VideoFeatureExtractionPipeline)
    assert isinstance(extractor.model, hf_vssl.MLFOModel)
    paths = [str(clips["mp4"]), str(clips["webm"])]
    with torch.no_grad():
        pixel_values = extractor.video_processor(paths, return_tensors="pt")["pixel_values"]
        outputs = extractor.model(pixel_values)
    hidden = outputs.pooler_output.shape[-1]

    single = extractor(paths[0])
    assert isinstance(single, list) and len(single) == hidden
    torch.testing.assert_close(torch.tensor(single), outputs.pooler_output[0])
    for batch_size in (1, 2):
        embeddings = extractor(paths, batch_size=batch_size, return_tensors=True)
        torch.testing.assert_close(torch.stack(embeddings), outputs.pooler_output)
    maps = extractor(paths, pool=False, return_tensors=True)
    torch.testing.assert_close(torch.stack(maps), outputs.last_hidden_state)
    decoded = read_video(paths[1])  # arrays are sampled the same way as files
    torch.testing.assert_close(extractor(decoded, return_tensors=True), outputs.pooler_output[1])
    with pytest.raises(ValueError, match="single frames"):
        extractor(list(decoded))


def test_feature_extraction_pipeline_with_only_an_image_processor(checkpoint, clips):
    encoder = hf_vssl.MLFOModel.from_pretrained(checkpoint)
    _, image_processor = _processors()
    extractor = pipeline(VIDEO_FEATURE_EXTRACTION, model=encoder, image_processor=image_processor)
    assert extractor.video_processor is None
    # the image processor's transform with the default clip sampling, through the one video loader
    video_processor = VideoSSLVideoProcessor(
        num_frames=NUM_FRAMES, size={"shortest_edge": SIZE}, crop_size=SIZE
    )
    with torch.no_grad():
        expected = encoder(**video_processor(clips["webm"], return_tensors="pt")).pooler_output[0]
    torch.testing.assert_close(extractor(str(clips["webm"]), return_tensors=True), expected)
    every_frame = read_video(clips["webm"])
    as_frames = [Image.fromarray(frame) for frame in every_frame]
    from_arrays = extractor([every_frame, as_frames], return_tensors=True)  # a batch: an array, a frame list
    torch.testing.assert_close(torch.stack(from_arrays), torch.stack([expected, expected]))
