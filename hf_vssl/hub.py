"""Model cards and Hub publishing for hf_vssl checkpoints.

`render_model_card` / `write_model_card` fill the method's card template (`model_cards/<method>.md`) with the saved
model's `config.json`, the run's resolved training config and the results hf_vssl measured
(`hf_vssl.evaluation.results.EvalResults`: the `results.json` files the training scripts write), and put the Hub
metadata (tags, datasets, `model-index`) in front. Nothing is invented: a card without results says "not
evaluated". `push_folder` creates the repo if needed and uploads the folder with the real `huggingface_hub` client.

    hf-vssl-hub card DIR [--method mlfo] [--model_id ORG/NAME] [--config run_config.yaml] [--results R.json ...]
    hf-vssl-hub push DIR REPO_ID [--private] [--commit_message MSG] [--revision BRANCH]

(or `python -m hf_vssl.hub ...`; the options' former spellings with dashes, `--model-id`, still work).

The Hub endpoint comes from `HF_ENDPOINT`, which `huggingface_hub` reads once when it is first imported.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import fields
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
import yaml
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HfHubHTTPError
from transformers import PreTrainedConfig

from hf_vssl.cli import CommandLineParser, command_line
from hf_vssl.evaluation.results import EvalRecord, EvalResults
from hf_vssl.methods import METHODS, get_method
from hf_vssl.video_processing_vssl import VideoSSLVideoProcessor

logger = logging.getLogger(__name__)

__all__ = [
    "EXAMPLE_CLIP",
    "card_dataset_name",
    "fill_template",
    "hub_model_id_of",
    "load_train_config",
    "push_folder",
    "render_model_card",
    "write_model_card",
]

DEFAULT_COMMIT_MESSAGE = "Upload hf_vssl encoder"
# Never uploaded: byte-code caches and tool folders that end up next to a saved model.
UPLOAD_IGNORE_PATTERNS = [
    "__pycache__/*",
    "*/__pycache__/*",
    "*.pyc",
    ".cache/*",
    ".git/*",
    ".ipynb_checkpoints/*",
]
_CARD_MARKER = re.compile(r"<!-- hf_vssl card: model_id=(\S+) method=(\S+) -->")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}")
_SECRET_KEY = re.compile(r"token|secret|password|passwd|api[_-]?key|credential", re.IGNORECASE)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Path components that name a split or a container, not a dataset: skipped when a local path is named.
_NOT_A_NAME = {
    "train",
    "training",
    "validation",
    "valid",
    "val",
    "test",
    "testing",
    "eval",
    "shards",
    "videos",
}
# The widget's example: a synthetic "right" motion clip (hf_vssl.data.synthetic, 32 frames of 64x64, h264, 8 KB)
# that ships with the card templates and is copied into every folder whose card is written.
EXAMPLE_CLIP = "example_clip.mp4"
# Hub pipeline tags per kind of checkpoint: the Hub has no video feature-extraction task, so encoders take the
# generic one.
PIPELINE_TAGS = {"encoder": "feature-extraction", "classifier": "video-classification"}

# config.json fields of the encoder table; the method's other config fields go to the method table.
_ENCODER_ROWS = {
    "backbone": "Backbone",
    "embedding_size": "Stem width",
    "hidden_sizes": "Stage widths",
    "depths": "Blocks per stage",
    "num_channels": "Input channels",
    "num_frames": "Frames per clip (config)",
    "image_size": "Image size (config)",
}
_GENERIC_CONFIG_FIELDS = {f.name for f in fields(PreTrainedConfig)}
# The training scripts' arguments (run_config.yaml) summarised on the card; the whole config follows it.
_TRAIN_SUMMARY = """train_dir dataset_name model_name_or_path num_train_epochs max_steps per_device_train_batch_size
    gradient_accumulation_steps optimizer learning_rate backbone_lr_scale weight_decay lr_decay_epochs
    mixed_precision seed""".split()


# --------------------------------------------------------------------------------------------------------------
# Reading a saved model folder and a run config


def _read_model_config(model_dir: str | Path) -> tuple[Path, dict]:
    """A folder written by `save_pretrained` and its `config.json`, or an error that says what is wrong."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist or is not a folder")
    if not (path := folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: pass a folder written by save_pretrained")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return folder, config


def _resolve_method(method: str | None, config: Mapping, config_path: Path) -> str:
    """The card's method: `method`, else `config.json`'s model_type; a checkpoint of another method is an error."""
    model_type = config.get("model_type")
    key = model_type if method is None else method.lower()
    if key not in METHODS:
        named = f"{config_path} has model_type {model_type!r}" if method is None else f"{method!r} was named"
        raise ValueError(f"unknown method: {named}; hf_vssl methods are {', '.join(METHODS)}")
    if model_type in METHODS and model_type != key:
        raise ValueError(f"method {key!r} was requested but {config_path} has model_type {model_type!r}")
    if model_type != key:
        logger.warning("%s has model_type %r; writing a %s card as requested", config_path, model_type, key)
    return key


def _count_parameters(config: Mapping, method: str, architecture: str) -> int | None:
    """Parameters of the checkpoint's class, counted without weights (meta device): the weights files also hold
    buffers (BatchNorm statistics, queues). None when `architecture` is not one of the method's classes."""
    spec = METHODS[method]
    classes = {c.__name__: c for c in (spec.model, spec.classifier, spec.pretraining) if c is not None}
    if architecture not in classes:
        return None
    with torch.device("meta"):
        return classes[architecture](spec.config.from_dict(dict(config))).num_parameters()


def card_dataset_name(spec: str | os.PathLike | None) -> str | None:
    """How a card's metadata names a dataset: a Hub dataset id as it is (``org/name``; ``hf://datasets/org/name/...``
    gives ``org/name``), a local folder, file or glob by a clean name (its last component that is not a split or a
    container: ``.cache/demo-data/train`` -> ``demo-data``), never by its local path; other text unchanged."""
    if spec is None or not str(spec).strip():
        return None
    text = str(spec).strip()
    if text.startswith("hf://datasets/"):
        return "/".join(text.removeprefix("hf://datasets/").split("/")[:2]).split("@")[0]
    local = (
        Path(text).expanduser().exists()
        or text.startswith((".", "/", "~"))
        or any(char in text for char in "*?[{")
        or ("/" in text and not _HUB_ID.match(text))
        or "\\" in text
    )
    if not local:
        return text
    parts = [
        p for p in re.split(r"[/\\]+", text) if p and p not in (".", "..", "~") and not set(p) & set("*?[{")
    ]
    parts = [Path(p).stem if "." in p.strip(".") else p for p in parts]
    names = [p.lstrip(".") for p in parts if p.lower() not in _NOT_A_NAME and p.lstrip(".")]
    return names[-1] if names else "local-videos"


def hub_model_id_of(model_name_or_path: str | os.PathLike | None) -> str | None:
    """The Hub id of a checkpoint given as a Hub id, or as a local folder that was pushed: its run_config.yaml
    pushed it (``push_to_hub`` with ``hub_model_id``), or its card was rendered for a Hub repo id. None otherwise."""
    if not model_name_or_path:
        return None
    folder = Path(model_name_or_path).expanduser()
    if not folder.exists():
        return str(model_name_or_path) if _HUB_ID.match(str(model_name_or_path)) else None
    run_config = folder / "run_config.yaml"
    if run_config.is_file():
        config = load_train_config(run_config)
        if config.get("push_to_hub") and config.get("hub_model_id"):
            return str(config["hub_model_id"])
    readme = folder / "README.md"
    marker = _CARD_MARKER.search(readme.read_text(encoding="utf-8")) if readme.is_file() else None
    return marker.group(1) if marker and _HUB_ID.match(marker.group(1)) else None


def _package_file(name: str) -> Path | None:
    """A file that ships with the card templates (the wheel's hf_vssl/model_cards, the checkout's model_cards)."""
    here = Path(__file__).resolve().parent
    return next(
        (p for p in (here / "model_cards" / name, here.parent / "model_cards" / name) if p.is_file()), None
    )


def load_train_config(path: str | Path) -> dict:
    """Read a run's resolved training config (`run_config.yaml`, YAML or JSON) into a dict."""
    try:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"training config {path} is not valid YAML/JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ValueError(f"training config {path} must hold a mapping, got {type(config).__name__}")
    return config


# --------------------------------------------------------------------------------------------------------------
# Card rendering


def fill_template(template: str, values: Mapping[str, Any], *, source: str = "template") -> str:
    """Replace every `{{ name }}` in `template` by `values[name]` (one pass: values are not re-expanded)."""
    missing = sorted({m.group(1) for m in _PLACEHOLDER.finditer(template)} - set(values))
    if missing:
        raise KeyError(f"{source} uses placeholders that have no value: {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), template)


def _load_template(method: str, template_dir: str | Path | None) -> tuple[str, Path]:
    own = get_method(method).card.template
    if own is not None and template_dir is None:
        return Path(own).read_text(encoding="utf-8"), Path(own)
    here = Path(__file__).resolve().parent  # the wheel's hf_vssl/model_cards, the checkout's model_cards
    dirs = [Path(template_dir)] if template_dir else [here / "model_cards", here.parent / "model_cards"]
    for folder in dirs:
        if (path := folder / f"{method}.md").is_file():
            return path.read_text(encoding="utf-8"), path
    raise FileNotFoundError(
        f"no card template {method}.md in {', '.join(map(str, dirs))}; the templates ship in the package "
        "(hf_vssl/model_cards) and in the source checkout's model_cards/ (pass template_dir= to use another)"
    )


def _hf_vssl_version() -> str:
    try:
        return version("hf-vssl")
    except PackageNotFoundError:
        return "(development version)"


def _md_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)
    return text.replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


def _encoder_table(config: Mapping, method: str, architecture: str) -> str:
    rows = [("Class", f"`{architecture}` (`model_type` = `{config.get('model_type')}`)")]
    rows += [(label, _md_value(config[key])) for key, label in _ENCODER_ROWS.items() if key in config]
    width = config["hidden_sizes"][-1]
    rows.append(("Feature (`pooler_output`)", f"{width}-d, stage 4 global average pooled"))
    if (params := _count_parameters(config, method, architecture)) is not None:
        rows.append(("Parameters", f"{params / 1e6:.2f} M" if params >= 1e6 else f"{params:,}"))
    if config.get("dtype") is not None:
        rows.append(("Weights dtype", _md_value(config["dtype"])))
    return _table(("", ""), rows)


def _method_hparams(config: Mapping, method: str) -> str:
    own = [f.name for f in fields(METHODS[method].config) if f.name not in _GENERIC_CONFIG_FIELDS]
    keys = [k for k in own if k in config and k not in _ENCODER_ROWS]
    if not keys:
        return ""
    table = _table(("Setting", "Value"), [(f"`{k}`", _md_value(config[k])) for k in keys])
    return f"Method and backbone settings recorded in `config.json`:\n\n{table}"


def _classifier_texts(config: Mapping, architecture: str, model_id: str) -> tuple[str, str]:
    """For a fine-tuned classifier checkpoint: a note before the encoder-centred text of the template, and how to
    load the classifier itself (the template's `AutoModel` gives its encoder)."""
    note = (
        f"> **This checkpoint is a video classifier** (`{architecture}`, {len(config.get('id2label') or {})} "
        "classes): the encoder described below with a linear head, fine-tuned on labelled videos. Load it with\n"
        f'> `AutoModelForVideoClassification.from_pretrained("{model_id}", trust_remote_code=True)` or\n'
        f'> `pipeline("video-classification", model="{model_id}", trust_remote_code=True)`;\n'
        "> `outputs.logits` are `[batch, classes]`."
    )
    snippet = (
        "`AutoModel` loads the encoder of this classifier checkpoint; the classifier itself (encoder and linear "
        "head, `outputs.logits` are `[batch, classes]`) loads with\n\n```python\n"
        "from transformers import AutoModelForVideoClassification\n\n"
        f'classifier = AutoModelForVideoClassification.from_pretrained("{model_id}")  # an hf_vssl.{architecture}\n'
        "```"
    )
    return note, snippet


def _kind_limitation(config: Mapping, is_classifier: bool, dataset: str | None) -> str:
    """The Limitations line that depends on what the checkpoint is."""
    if not is_classifier:
        return "Self-supervised features, not a classifier: train a linear probe or fine-tune for a task."
    labels = list((config.get("id2label") or {}).values())
    shown = ", ".join(map(str, labels[:10])) + (", ..." if len(labels) > 10 else "")
    data = f" of `{dataset}`" if dataset else ""
    return (
        f"A classifier for the {len(labels)} classes it was fine-tuned on ({shown}), from labelled videos{data}: "
        "it gives one of these labels to any video, also to videos of none of them, and its accuracy on other "
        "data was not measured."
    )


def _widget(folder: Path, model_id: str, method: str, is_classifier: bool) -> list[dict] | None:
    """The card's widget example: the example clip in the folder and the output this model gives for it, measured
    now with the folder's weights and video processor (what `pipeline()` computes), so that the model page shows
    a real example where no inference provider runs video models. None when the folder has no example clip."""
    clip = folder / EXAMPLE_CLIP
    if not clip.is_file():
        return None
    spec = get_method(method)
    model_class = spec.classifier if is_classifier else spec.model
    model = model_class.from_pretrained(folder, dtype=torch.float32).eval()
    if (folder / "video_preprocessor_config.json").is_file():
        processor = VideoSSLVideoProcessor.from_pretrained(folder)
    else:
        processor = VideoSSLVideoProcessor.for_clip_size(model.config.num_frames, model.config.image_size)
    pixel_values = processor(str(clip), num_frames=model.config.num_frames, return_tensors="pt")[
        "pixel_values"
    ]
    with torch.no_grad():
        output = model(pixel_values=pixel_values)
    # the file in the model repo; a card rendered for a name without a namespace points to it relatively
    hub_file = f"https://huggingface.co/{model_id}/resolve/main/{EXAMPLE_CLIP}"
    example = {"src": hub_file if _HUB_ID.match(model_id) else EXAMPLE_CLIP, "example_title": "Example clip"}
    if is_classifier:
        scores = output.logits.softmax(-1)[0]
        top = scores.topk(min(5, scores.numel()))
        labels = [model.config.id2label[int(i)] for i in top.indices]
        example["output"] = [
            {"label": label, "score": round(float(v), 4)} for label, v in zip(labels, top.values)
        ]
    else:
        embedding = output.pooler_output[0]
        values = ", ".join(f"{float(v):.4f}" for v in embedding[:4])
        example["output"] = {
            "text": f"{embedding.numel()}-d embedding (pooler_output, mean over the saved processor's views): "
            f"[{values}, ...]"
        }
    return [example]


def _redact(config: Any) -> Any:
    if isinstance(config, Mapping):
        return {k: "<redacted>" if _SECRET_KEY.search(str(k)) else _redact(v) for k, v in config.items()}
    return [_redact(v) for v in config] if isinstance(config, list) else config


def _training_section(train_config: Mapping | None, dataset_name: str | None) -> str:
    stated = f"`{dataset_name}`" if dataset_name else None
    if train_config is None:
        text = "No training configuration was given when this card was written, so the training data and recipe are not recorded here."
        return text + (f"\n\nTraining data (as stated by the publisher): {stated}." if stated else "")
    config = _redact(json.loads(json.dumps(train_config, default=str)))
    rows = [("Training data (stated by the publisher)", stated)] if stated else []
    # unset values (None, max_steps -1) say nothing about the run
    rows += [(f"`{k}`", _md_value(config[k])) for k in _TRAIN_SUMMARY if config.get(k) not in (None, -1)]
    dumped = yaml.safe_dump(config, sort_keys=False, allow_unicode=True).rstrip()
    return (
        "From the run's resolved training configuration:\n\n"
        + (_table(("Setting", "Value"), rows) + "\n\n" if rows else "")
        + "<details>\n<summary>Full resolved training configuration</summary>\n\n"
        + f"```yaml\n{dumped}\n```\n\n</details>"
    )


def _eval_result(record: EvalRecord) -> EvalResult:
    # model-index groups results per (task, dataset, split): the protocol in the name tells a linear-probe
    # accuracy from a kNN accuracy on the same split.
    dataset = card_dataset_name(record.dataset)
    return EvalResult(
        task_type="video-classification",
        task_name="Video classification",
        dataset_type=dataset,
        dataset_name=dataset,
        dataset_split=record.split,
        metric_type=record.metric_type,
        metric_name=f"{record.protocol_name} {record.metric_name}",
        metric_value=record.percent,
    )


def _results_section(results: EvalResults) -> str:
    if not results:
        return (
            "**Not evaluated.** No evaluation results measured by hf_vssl were given for this checkpoint, so "
            "this card reports none. Run `training/evaluate.py` and re-render the card with `--results`."
        )
    rows = [
        (r.protocol_name, r.dataset, r.split, r.metric_name, f"{r.percent:.1f}", r.measured_with or "-")
        for r in results
    ]
    header = ("Protocol", "Dataset", "Split", "Metric", "Value (%)", "Measured with")
    return (
        "Measured on this checkpoint by hf_vssl's evaluation code, in percent (the same numbers are in this\n"
        f"card's `model-index` metadata).\n\n{_table(header, rows)}"
    )


def _clip_sampling(folder: Path, num_frames: int, image_size: int) -> str:
    """The evaluation views: those of the video processor saved with the model, which the pipelines use."""
    if (folder / "video_preprocessor_config.json").is_file():
        processor = VideoSSLVideoProcessor.from_pretrained(folder)
    else:
        processor = VideoSSLVideoProcessor.for_clip_size(num_frames, image_size)
    return (
        "Views of each video, as evaluation measured them and as the video processor saved with this model (and so "
        f'`pipeline("video-classification")`) makes them: {processor.describe_sampling()}.\n'
    )


def render_model_card(
    method: str | None,
    model_dir: str | Path,
    *,
    model_id: str,
    train_config: Mapping | None = None,
    eval_results: EvalResults | None = None,
    dataset_name: str | None = None,
    base_model: str | None = None,
    pipeline_tag: str | None = None,
    license: str = "apache-2.0",
    template_dir: str | Path | None = None,
) -> ModelCard:
    """Render the model card of a saved hf_vssl model.

    Args:
        method: a key of `hf_vssl.METHODS`; None reads it from `config.json`'s `model_type`.
        model_dir: folder written by `save_pretrained` (needs `config.json`).
        model_id: the Hub repo id the card is for (used in the loading snippets and as the model-index name).
        train_config: the run's resolved training config (shown as a summary table plus the full YAML).
        eval_results: the results hf_vssl measured on this checkpoint; None or empty gives "not evaluated".
        dataset_name: training dataset (a Hub dataset id where there is one); goes into `datasets`.
        base_model: Hub id of the checkpoint this one derives from (for fine-tuned models).
        pipeline_tag: Hub pipeline tag; defaults to "video-classification" for classifiers, "feature-extraction"
            for encoders (`PIPELINE_TAGS`).
        license: the `license` metadata field (the code's licence; weights also inherit their data's terms).
        template_dir: folder with `<method>.md` templates (default: the method's own, else the package's).

    Returns:
        a `huggingface_hub.ModelCard` whose metadata carries library_name, tags, datasets, metrics and the
        `model-index` built from `eval_results`.
    """
    folder, config = _read_model_config(model_dir)
    method = _resolve_method(method, config, folder / "config.json")
    spec = get_method(method)
    # the method's defaults fill what config.json leaves out
    config = {**spec.config().to_dict(), **config}
    results = EvalResults() if eval_results is None else eval_results
    if not isinstance(results, EvalResults) or not isinstance(train_config, Mapping | None):
        raise TypeError("eval_results must be EvalResults, train_config a mapping")

    architecture = str((config.get("architectures") or [spec.model.__name__])[0])
    is_classifier = architecture == spec.classifier.__name__
    if pipeline_tag is None:
        pipeline_tag = PIPELINE_TAGS["classifier" if is_classifier else "encoder"]
    dataset_id = card_dataset_name(dataset_name)
    model_name = model_id.rstrip("/").rsplit("/", 1)[-1]
    frames, size = config["num_frames"], config["image_size"]
    classifier_note, classifier_snippet = (
        _classifier_texts(config, architecture, model_id) if is_classifier else ("", "")
    )
    template, template_path = _load_template(method, template_dir)
    values = {
        "model_id": model_id,
        "model_name": model_name,
        "hf_vssl_version": _hf_vssl_version(),
        "encoder_class": spec.model.__name__,  # what `AutoModel` returns, whichever head was saved
        "feature_dim": config["hidden_sizes"][-1],
        "num_frames": frames,
        "image_size": size,
        "encoder_table": _encoder_table(config, method, architecture),
        "method_hparams": _method_hparams(config, method),
        "training_section": _training_section(train_config, dataset_id),
        "results_section": _results_section(results),
        "clip_note": f"`config.json` records {frames}-frame clips at {size}x{size}; other clip lengths and "
        "sizes run, but the features are best at the size the encoder was trained on.",
        "clip_sampling": _clip_sampling(folder, frames, size),
        "classifier_note": classifier_note,
        "classifier_snippet": classifier_snippet,
        "kind_limitation": _kind_limitation(config, is_classifier, dataset_id),
    }
    body = re.sub(r"\n{3,}", "\n\n", fill_template(template, values, source=str(template_path)))

    tags = ["video", "self-supervised", "custom_code", "hf_vssl", method, f"arxiv:{spec.card.arxiv_id}"]
    tags.append(config["backbone"])
    card_data = ModelCardData(
        library_name="transformers",
        license=license,
        tags=tags,
        datasets=[dataset_id] if dataset_id else None,
        metrics=sorted({r.metric_type for r in results}) or None,
        base_model=base_model,
        pipeline_tag=pipeline_tag,
        model_name=model_name if results else None,
        eval_results=[_eval_result(r) for r in results] or None,
        widget=_widget(folder, model_id, method, is_classifier),
    )
    marker = f"<!-- hf_vssl card: model_id={model_id} method={method} -->"
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{marker}\n\n{body.strip()}\n")


def write_model_card(
    model_dir: str | Path, method: str | None = None, *, model_id: str | None = None, **card_options
) -> Path:
    """Render the card (`render_model_card` with `card_options`; `model_id` defaults to the folder's name: pass
    the Hub repo id the folder will be pushed to) and write it as the folder's README.md, whose path it returns.
    The widget's example clip is copied into the folder first (its measured output goes on the card)."""
    folder, _ = _read_model_config(model_dir)
    example = _package_file(EXAMPLE_CLIP)
    if example is not None and not (folder / EXAMPLE_CLIP).is_file():
        shutil.copyfile(example, folder / EXAMPLE_CLIP)
    card = render_model_card(method, folder, model_id=model_id or folder.resolve().name, **card_options)
    card.save(folder / "README.md")
    return folder / "README.md"


# --------------------------------------------------------------------------------------------------------------
# Pushing


def _check_pushable(model_dir: str | Path) -> Path:
    """The folder to push; an error before any network call if it could not be loaded from the Hub."""
    folder, config = _read_model_config(model_dir)
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("pytorch_model*.bin")):
        raise FileNotFoundError(f"{folder} has no model weights (model.safetensors); save the model there")
    for target in (config.get("auto_map") or {}).values():
        reference = target[-1] if isinstance(target, list) else target
        if not isinstance(reference, str) or "--" in reference:
            continue  # code that lives in another repo
        module_file = folder / (reference.rsplit(".", 1)[0] + ".py")
        if not module_file.is_file():
            raise FileNotFoundError(
                f"{folder / 'config.json'} maps an Auto class to {reference}, but {module_file.name} is not in "
                f"{folder}; save with the model's save_pretrained so that its code is copied"
            )
    if not config.get("auto_map"):
        logger.warning(f"{folder / 'config.json'} has no auto_map: loading it from the Hub will need hf_vssl")
    return folder


def push_folder(
    model_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    revision: str | None = None,
):
    """Create `repo_id` if needed and upload a saved model folder to it, with the real Hub client.

    Args:
        model_dir: folder written by `save_pretrained` (ideally with a README.md from `write_model_card`).
        repo_id: "org/name" (or "name" for the token's own namespace).
        private: visibility of a newly created repo (an existing repo keeps its visibility).
        token: Hub token; None uses `HF_TOKEN` or the stored login.
        commit_message: the commit's summary.
        revision: branch to commit to (created from main if missing); None commits to main.

    Returns:
        the `huggingface_hub.CommitInfo`: a `str` equal to the commit URL, with `.oid` and `.repo_url`.
    """
    folder = _check_pushable(model_dir)
    readme = folder / "README.md"
    if not readme.is_file():
        logger.warning(f"{folder} has no README.md (model card): run `hf-vssl-hub card {folder}`")
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model").repo_id
    marker = _CARD_MARKER.search(readme.read_text(encoding="utf-8")) if readme.is_file() else None
    if marker and marker.group(1) != repo_id:
        logger.warning(
            f"README.md was rendered for {marker.group(1)} but is pushed to {repo_id}; its loading snippets name "
            f"the wrong repo (re-render with `hf-vssl-hub card {folder} --model_id {repo_id}`)"
        )
    if revision is not None and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        commit_message=commit_message,
        revision=revision,
        ignore_patterns=UPLOAD_IGNORE_PATTERNS,
    )


# --------------------------------------------------------------------------------------------------------------
# Command line


def _build_parser() -> argparse.ArgumentParser:
    # snake_case options as the training scripts'; the dashed spellings stay as aliases (as HfArgumentParser's)
    parser = CommandLineParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    card = sub.add_parser("card", help="write README.md (the model card) into a saved model folder")
    card.add_argument("model_dir", help="folder written by save_pretrained")
    card.add_argument("--method", choices=sorted(METHODS), help="default: config.json's model_type")
    card.add_argument(
        "--model_id", "--model-id", help="Hub repo id the card is for (default: the folder name)"
    )
    card.add_argument("--config", help="the run's resolved training config (run_config.yaml)")
    card.add_argument("--results", dest="eval_results", nargs="+", default=[], help="results.json file(s)")
    card.add_argument("--dataset_name", "--dataset-name", help="training dataset (Hub id where there is one)")
    card.add_argument("--base_model", "--base-model", help="Hub id this checkpoint derives from")
    card.add_argument("--pipeline_tag", "--pipeline-tag", help="Hub pipeline tag")
    card.add_argument("--license", default="apache-2.0", help="the card's license")

    push = sub.add_parser("push", help="create the Hub repo if needed and upload a saved model folder")
    push.add_argument("model_dir", help="folder written by save_pretrained")
    push.add_argument("repo_id", help="org/name on the Hub")
    push.add_argument("--private", action="store_true", help="create the repo as private")
    push.add_argument(
        "--commit_message", "--commit-message", default=DEFAULT_COMMIT_MESSAGE, help="commit title"
    )
    push.add_argument("--revision", help="branch to push to (default: main)")
    push.add_argument("--token", help="Hub token (default: HF_TOKEN or the stored login)")
    return parser


@command_line
def main(argv: Sequence[str] | None = None) -> int:
    # the parsed options are the keyword arguments of write_model_card / push_folder
    options = vars(_build_parser().parse_args(argv))
    command, model_dir = options.pop("command"), options.pop("model_dir")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if command == "card":
            options["eval_results"] = sum(map(EvalResults.load, options["eval_results"]), EvalResults())
            config = options.pop("config")
            options["train_config"] = load_train_config(config) if config else None
            print(write_model_card(model_dir, **options))
        else:
            print(push_folder(model_dir, **options).commit_url)
    except HfHubHTTPError as exc:  # before OSError, which it subclasses
        print(f"hf_vssl.hub: the Hub refused the request: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError) as exc:
        print(f"hf_vssl.hub: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
