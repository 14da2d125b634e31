"""Model cards and Hub publishing for hf_vssl encoders.

A pretraining run ends with the encoder saved by `save_pretrained` (config, weights and the modelling code for
`trust_remote_code`). This module turns such a folder into a Hub repository:

- `render_model_card` / `write_model_card` fill the method's card template (`model_cards/<method>.md`) with the
  encoder's `config.json`, the run's resolved training config and the evaluation results measured by
  hf_vssl, and put Hub metadata (tags, datasets, `model-index`) in front of it. Nothing is invented: missing
  results read "not evaluated", a missing training config says so.
- `push_folder` creates the repo (if needed) and uploads the folder with the real `huggingface_hub` client.

Command line::

    python -m hf_vssl.hub card DIR [--method mlfo] [--model-id ORG/NAME] [--config run_config.yaml] [--results R.json ...]
        [--variant pretrained]
    python -m hf_vssl.hub push DIR REPO_ID [--private] [--commit-message MSG] [--revision BRANCH]

Evaluation results (`eval_results`, `--results`) are JSON in one of two shapes. Records (preferred)::

    {"dataset": "ucf101", "dataset_name": "UCF101 split 1", "split": "test",
     "results": [{"protocol": "linear_probe", "metric": "top1", "value": 61.2},
                 {"protocol": "retrieval", "metric": "R@1", "value": 40.3, "split": "test"}]}

or nested, every numeric leaf a metric: ``{"dataset": "ucf101", "split": "test", "linear_probe": {"top1": 61.2},
"retrieval": {"R@1": 40.3, "R@5": 60.1}}``. A record may override `dataset`, `dataset_name`, `split` and
`dataset_config`. Several such documents may be given as a list. Values are copied as they are (no unit
conversion); a value that is not a finite number is an error. A metric name may end in a parenthesised
qualifier, ``"top1 (5 clips x three crops)"``: it stays in the displayed name, not in the model-index type.

`training/evaluate.py --output_json` (`hf_vssl.evaluation.runner.write_results`) writes one nested document per
evaluated model, keyed by its name: ``{"pretrained": {"dataset": ..., "knn": {...}}, "random init": {...}}``.
The card takes the results of `variant` ("pretrained" unless told otherwise, `--variant` on the command line).

The Hub endpoint comes from `HF_ENDPOINT`, which `huggingface_hub` reads once when it is first imported.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import numbers
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HfHubHTTPError

from hf_vssl.methods import METHODS, get_method

logger = logging.getLogger(__name__)

__all__ = [
    "EvalRecord",
    "fill_template",
    "load_eval_results",
    "load_train_config",
    "main",
    "parse_eval_results",
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

# config.json keys that every transformers config has; they say nothing about the method.
_GENERIC_CONFIG_KEYS = {
    "_name_or_path",
    "architectures",
    "auto_map",
    "model_type",
    "transformers_version",
    "dtype",
    "torch_dtype",
    "id2label",
    "label2id",
    "num_labels",
    "problem_type",
    "output_hidden_states",
    "output_attentions",
    "return_dict",
    "use_cache",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
    "tie_word_embeddings",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "sep_token_id",
    "decoder_start_token_id",
    "tokenizer_class",
    "prefix",
    "task_specific_params",
    "finetuning_task",
    "cross_attention_hidden_size",
    "add_cross_attention",
    "is_decoder",
    "pruned_heads",
    "tf_legacy_loss",
    "use_bfloat16",
    "torchscript",
}
# config.json keys shown in the encoder table rather than in the method table.
_ENCODER_KEYS = (
    "backbone",
    "embedding_size",
    "hidden_sizes",
    "depths",
    "num_channels",
    "num_frames",
    "image_size",
)

# Rows of the training summary: label -> config key names that may hold it (matched on the last key segment).
_TRAIN_SUMMARY_KEYS: list[tuple[str, tuple[str, ...]]] = [
    (
        "Training data",
        ("dataset_name", "dataset_id", "dataset", "train_dataset", "source", "train_source", "data_dir"),
    ),
    ("Epochs", ("num_epochs", "epochs", "num_train_epochs")),
    ("Max steps", ("max_steps", "num_steps", "max_train_steps")),
    (
        "Batch size per device",
        ("per_device_batch_size", "per_device_train_batch_size", "batch_size", "train_batch_size"),
    ),
    ("Gradient accumulation", ("gradient_accumulation_steps",)),
    ("Processes", ("num_processes", "world_size")),
    ("Optimizer", ("optimizer", "optim")),
    ("Learning rate", ("learning_rate", "lr")),
    ("Weight decay", ("weight_decay",)),
    ("LR schedule", ("lr_scheduler", "lr_scheduler_type", "scheduler", "lr_milestones", "lr_decay_epochs")),
    ("Mixed precision", ("mixed_precision",)),
    ("Frames per clip", ("num_frames",)),
    ("Image size", ("image_size", "crop_size")),
    ("Seed", ("seed",)),
]

_PROTOCOL_NAMES = {
    "linear_probe": "Linear probe",
    "linear": "Linear probe",
    "knn": "kNN",
    "retrieval": "Retrieval",
    "nn_retrieval": "Retrieval",
    "finetune": "Fine-tuning",
    "fine_tune": "Fine-tuning",
    "finetuning": "Fine-tuning",
}
_TOPK = re.compile(r"^(?:top|acc|accuracy)[-_@]?(\d+)(?:[-_]?acc(?:uracy)?)?$", re.IGNORECASE)
_RECALL = re.compile(r"^(?:r|recall)[-_@]?(\d+)$", re.IGNORECASE)
_QUALIFIED = re.compile(r"^(.*?\S)\s*(\([^()]*\))$")
DEFAULT_RESULTS_VARIANT = "pretrained"
_RESERVED_RESULT_KEYS = {
    "dataset",
    "dataset_name",
    "split",
    "dataset_config",
    "model",
    "model_id",
    "meta",
    "results",
}


# --------------------------------------------------------------------------------------------------------------
# Evaluation results


@dataclass(frozen=True)
class EvalRecord:
    """One measured number: `value` of `metric` under `protocol` on a dataset split."""

    protocol: str
    metric: str
    value: float | int
    dataset: str
    dataset_name: str
    split: str | None = None
    dataset_config: str | None = None

    @property
    def protocol_name(self) -> str:
        key = self.protocol.lower().replace("-", "_").replace(" ", "_")
        return _PROTOCOL_NAMES.get(key, self.protocol)

    @property
    def metric_type_and_name(self) -> tuple[str, str]:
        """(model-index metric type, human-readable metric name)."""
        # A parenthesised qualifier ("top1 (5 clips x three crops)") says how the number was measured, not what
        # it is: the Hub type stays the standard one and only the displayed name carries the qualifier.
        qualified = _QUALIFIED.match(self.metric.strip())
        metric, qualifier = (qualified.group(1), f" {qualified.group(2)}") if qualified else (self.metric, "")
        if metric.lower() in ("accuracy", "acc", "top1_accuracy"):
            return "accuracy", f"top-1 accuracy{qualifier}"
        if match := _TOPK.match(metric):
            return "accuracy", f"top-{match.group(1)} accuracy{qualifier}"
        if match := _RECALL.match(metric):
            return "recall", f"Recall@{match.group(1)}{qualifier}"
        return metric, self.metric

    def to_eval_result(self) -> EvalResult:
        metric_type, metric_name = self.metric_type_and_name
        # The protocol goes into the metric name: model-index groups results per (task, dataset, split), so a
        # linear-probe and a kNN accuracy on the same split share one entry and are told apart by name.
        return EvalResult(
            task_type="video-classification",
            task_name="Video classification",
            dataset_type=self.dataset,
            dataset_name=self.dataset_name,
            dataset_split=self.split,
            dataset_config=self.dataset_config,
            metric_type=metric_type,
            metric_name=f"{self.protocol_name} {metric_name}",
            metric_value=self.value,
        )


def _number(value: Any, where: str) -> float | int:
    # numbers.Real admits numpy scalars from in-process callers; bool is an int but never a measurement.
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{where}: expected a finite number, got {value!r}")
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _is_per_model(doc: Mapping) -> bool:
    """Whether `doc` holds one results document per evaluated model, as `write_results` writes them."""
    return (
        bool(doc)
        and not doc.keys() & _RESERVED_RESULT_KEYS
        and all(isinstance(v, Mapping) and ("dataset" in v or "results" in v) for v in doc.values())
    )


def _select_variant(doc: Mapping, variant: str, where: str) -> tuple[Mapping, str]:
    """The results of model `variant` from a per-model document; any other document as it is."""
    if not _is_per_model(doc):
        return doc, where
    if variant not in doc:
        raise ValueError(
            f"{where} holds results per evaluated model ({', '.join(map(repr, doc))}) and none for {variant!r}; "
            "pick the model this card is for with --variant (variant= in Python)"
        )
    return doc[variant], f"{where}.{variant}"


def parse_eval_results(
    results: Any, *, source: str = "eval_results", variant: str = DEFAULT_RESULTS_VARIANT
) -> list[EvalRecord]:
    """Normalise evaluation results (see the module docstring for the accepted JSON) into `EvalRecord`s.

    `variant` picks the model from results written per evaluated model (`write_results`); other documents
    ignore it. Raises `ValueError` naming `source` and the offending key for anything that is not a finite
    number, a result without a dataset, a missing `variant`, or the same (protocol, metric, dataset, split) twice.
    """
    if results is None:
        return []
    documents = (
        results if isinstance(results, list) and all(isinstance(d, Mapping) for d in results) else None
    )
    if documents is not None and all("metric" in d and "value" in d for d in documents):
        documents = [{"results": documents}]  # a bare list of records
    if documents is None:
        if not isinstance(results, Mapping):
            raise ValueError(f"{source}: expected a JSON object or a list, got {type(results).__name__}")
        documents = [results]

    records: list[EvalRecord] = []
    for doc_index, doc in enumerate(documents):
        where = source if len(documents) == 1 else f"{source}[{doc_index}]"
        doc, where = _select_variant(doc, variant, where)
        defaults = {k: doc.get(k) for k in ("dataset", "dataset_name", "split", "dataset_config")}
        raw: list[tuple[str, dict]] = []
        if "results" in doc:
            if not isinstance(doc["results"], list):
                raise ValueError(f"{where}: 'results' must be a list of records")
            for i, rec in enumerate(doc["results"]):
                if not isinstance(rec, Mapping) or not {"metric", "value"} <= rec.keys():
                    raise ValueError(
                        f"{where}.results[{i}]: a record needs 'metric' and 'value' (got {rec!r})"
                    )
                protocol = rec.get("protocol") or rec.get("task")
                if not protocol:
                    raise ValueError(f"{where}.results[{i}]: a record needs 'protocol' (e.g. 'linear_probe')")
                raw.append((f"{where}.results[{i}]", {**rec, "protocol": protocol}))
        for protocol, metrics in doc.items():
            if protocol in _RESERVED_RESULT_KEYS:
                continue
            if not isinstance(metrics, Mapping):
                raise ValueError(
                    f"{where}.{protocol}: expected an object of metric -> number, got {metrics!r}"
                )
            for metric, value in metrics.items():
                extra = value if isinstance(value, Mapping) else {"value": value}
                if "value" not in extra:
                    raise ValueError(
                        f"{where}.{protocol}.{metric}: expected a number or an object with 'value'"
                    )
                raw.append(
                    (f"{where}.{protocol}.{metric}", {**extra, "protocol": protocol, "metric": metric})
                )

        for rec_where, rec in raw:
            merged = {k: rec.get(k) if rec.get(k) is not None else v for k, v in defaults.items()}
            dataset = merged["dataset"] or merged["dataset_name"]
            if not dataset:
                raise ValueError(f"{rec_where}: no dataset; set 'dataset' in the results JSON")
            records.append(
                EvalRecord(
                    protocol=str(rec["protocol"]),
                    metric=str(rec["metric"]),
                    value=_number(rec["value"], rec_where),
                    dataset=str(dataset),
                    dataset_name=str(merged["dataset_name"] or dataset),
                    split=None if merged["split"] is None else str(merged["split"]),
                    dataset_config=None
                    if merged["dataset_config"] is None
                    else str(merged["dataset_config"]),
                )
            )

    seen: set[tuple] = set()
    for rec in records:
        key = (rec.protocol_name, rec.metric_type_and_name, rec.dataset, rec.dataset_config, rec.split)
        if key in seen:
            raise ValueError(
                f"{source}: {rec.protocol} {rec.metric} on {rec.dataset} ({rec.split}) is given twice"
            )
        seen.add(key)
    return records


def _format_value(value: float | int) -> str:
    return repr(value)  # exactly the number in model-index: the shortest repr that round-trips


def _results_section(records: Sequence[EvalRecord]) -> str:
    if not records:
        return (
            "**Not evaluated.** No evaluation results measured by hf_vssl were given for this checkpoint, so "
            "this card reports none. Run `training/evaluate.py` and re-render the card with `--results`."
        )
    lines = [
        "Measured on this checkpoint by hf_vssl's evaluation code; values are copied from its results JSON as "
        "they are (the same numbers are in this card's `model-index` metadata).",
        "",
        "| Protocol | Dataset | Split | Metric | Value |",
        "|---|---|---|---|---|",
    ]
    for rec in records:
        dataset = rec.dataset_name + (f" ({rec.dataset_config})" if rec.dataset_config else "")
        lines.append(
            f"| {rec.protocol_name} | {dataset} | {rec.split or '-'} | {rec.metric_type_and_name[1]} | "
            f"{_format_value(rec.value)} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# Reading a saved model folder and a run config


def _model_dir(model_dir: str | Path) -> Path:
    folder = Path(model_dir)
    if not folder.exists():
        raise FileNotFoundError(f"model folder {folder} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder; pass the folder written by save_pretrained")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder} has no config.json: pass a folder written by `model.save_pretrained(folder)`"
        )
    return folder


def _read_model_config(folder: Path) -> dict:
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return config


def _resolve_method(method: str | None, config: Mapping, config_path: Path) -> str:
    model_type = config.get("model_type")
    if method is None:
        if model_type in METHODS:
            return model_type
        raise ValueError(
            f"{config_path} has model_type {model_type!r}, which is not an hf_vssl method "
            f"({', '.join(METHODS)}); name the method explicitly"
        )
    key = method.lower()
    if key not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if model_type in METHODS and model_type != key:
        raise ValueError(f"method {key!r} was requested but {config_path} has model_type {model_type!r}")
    if model_type not in METHODS:
        logger.warning("%s has model_type %r; writing a %s card as requested", config_path, model_type, key)
    return key


def _count_parameters(config: Mapping, method: str, architecture: str) -> int | None:
    """Parameters of the checkpoint's class, counted on an instance without weights (meta device).

    Not from the weights files: they also hold buffers (BatchNorm statistics, queues), which are not parameters.
    None when `architecture` is not one of the method's hf_vssl classes.
    """
    classes = METHODS[method]
    candidates = (classes.model, classes.classifier, classes.pretraining)
    model_class = next((c for c in candidates if c is not None and c.__name__ == architecture), None)
    if model_class is None:
        return None
    with torch.device("meta"):
        model = model_class(classes.config.from_dict(dict(config)))
    return model.num_parameters()


def _has_weights(folder: Path) -> bool:
    return any(
        (folder / name).is_file()
        for name in (
            "model.safetensors",
            "model.safetensors.index.json",
            "pytorch_model.bin",
            "pytorch_model.bin.index.json",
        )
    )


def load_train_config(path: str | Path) -> dict:
    """Read a run's resolved training config (YAML or JSON) into a dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config {path} does not exist")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"training config {path} is not valid YAML/JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ValueError(f"training config {path} must hold a mapping, got {type(config).__name__}")
    return config


def load_eval_results(
    paths: str | Path | Sequence[str | Path], *, variant: str = DEFAULT_RESULTS_VARIANT
) -> list[dict]:
    """Read one or several results JSON files; each is checked with `parse_eval_results`.

    Files written per evaluated model contribute the results of `variant` only.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    documents = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"results file {path} does not exist")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"results file {path} is not valid JSON: {exc}") from None
        parse_eval_results(doc, source=str(path), variant=variant)  # fail early, naming the file
        if isinstance(doc, list):
            docs = [{"results": doc}] if _is_record_list(doc) else doc
        else:
            docs = [doc]
        documents.extend(_select_variant(d, variant, str(path))[0] for d in docs)
    return documents


def _is_record_list(doc: list) -> bool:
    return all(isinstance(d, Mapping) and "metric" in d and "value" in d for d in doc)


# --------------------------------------------------------------------------------------------------------------
# Card rendering


def fill_template(template: str, values: Mapping[str, Any], *, source: str = "template") -> str:
    """Replace every `{{ name }}` in `template` by `values[name]` (one pass: values are not re-expanded)."""
    missing = sorted({m.group(1) for m in _PLACEHOLDER.finditer(template)} - set(values))
    if missing:
        raise KeyError(f"{source} uses placeholders that have no value: {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), template)


def _template_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent
    return [here / "model_cards", here.parent / "model_cards"]


def _load_template(method: str, template_dir: str | Path | None) -> tuple[str, Path]:
    own = get_method(method).card.template
    if own is not None and template_dir is None:
        return Path(own).read_text(encoding="utf-8"), Path(own)
    dirs = [Path(template_dir)] if template_dir is not None else _template_dirs()
    for folder in dirs:
        path = folder / f"{method}.md"
        if path.is_file():
            return path.read_text(encoding="utf-8"), path
    raise FileNotFoundError(
        f"no card template {method}.md in {', '.join(map(str, dirs))}; the templates ship in the package "
        "(hf_vssl/model_cards) and in the source checkout's model_cards/ (pass template_dir= to use another)"
    )


def _hf_vssl_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("hf-vssl")
    except PackageNotFoundError:
        return "(development version)"


def _md_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)
    return text.replace("|", "\\|")


def _encoder_table(config: Mapping, method: str, architecture: str) -> str:
    rows = [("Class", f"`{architecture}` (`model_type` = `{config.get('model_type')}`)")]
    labels = {
        "backbone": "Backbone",
        "embedding_size": "Stem width",
        "hidden_sizes": "Stage widths",
        "depths": "Blocks per stage",
        "num_channels": "Input channels",
        "num_frames": "Frames per clip (config)",
        "image_size": "Image size (config)",
    }
    rows += [(labels[key], _md_value(config[key])) for key in _ENCODER_KEYS if key in config]
    feature_dim = _feature_dim(config)
    if feature_dim is not None:
        rows.append(("Feature (`pooler_output`)", f"{feature_dim}-d, stage 4 global average pooled"))
    params = _count_parameters(config, method, architecture)
    if params is not None:
        rows.append(("Parameters", f"{params / 1e6:.2f} M" if params >= 1e6 else f"{params:,}"))
    if "dtype" in config or "torch_dtype" in config:
        rows.append(("Weights dtype", _md_value(config.get("dtype") or config.get("torch_dtype"))))
    lines = ["| | |", "|---|---|"] + [f"| {label} | {value} |" for label, value in rows]
    return "\n".join(lines)


def _feature_dim(config: Mapping) -> int | None:
    sizes = config.get("hidden_sizes")
    if isinstance(sizes, list) and sizes and isinstance(sizes[-1], int):
        return sizes[-1]
    size = config.get("hidden_size")
    return size if isinstance(size, int) else None


def _is_classifier(architecture: str) -> bool:
    return architecture.endswith("ForVideoClassification")


def _classifier_note(config: Mapping, architecture: str, model_id: str) -> str:
    """For a fine-tuned classifier checkpoint, say so before the encoder-centred text of the template."""
    if not _is_classifier(architecture):
        return ""
    labels = config.get("id2label") or {}
    return "\n".join(
        [
            f"> **This checkpoint is a video classifier** (`{architecture}`, {len(labels)} classes): the encoder "
            "described below with a linear head, fine-tuned on labelled videos. Load it with",
            f'> `AutoModelForVideoClassification.from_pretrained("{model_id}", trust_remote_code=True)` or',
            f'> `pipeline("video-classification", model="{model_id}", trust_remote_code=True)`;',
            "> `outputs.logits` are `[batch, classes]`.",
        ]
    )


def _classifier_snippet(architecture: str, model_id: str) -> str:
    """For a classifier checkpoint, how to load the classifier: the template's `AutoModel` gives its encoder."""
    if not _is_classifier(architecture):
        return ""
    return "\n".join(
        [
            "`AutoModel` loads the encoder of this classifier checkpoint; the classifier itself (encoder and "
            "linear head, `outputs.logits` are `[batch, classes]`) loads with",
            "",
            "```python",
            "from transformers import AutoModelForVideoClassification",
            "",
            f'classifier = AutoModelForVideoClassification.from_pretrained("{model_id}")  # an hf_vssl.{architecture}',
            "```",
        ]
    )


def _clip_note(num_frames: Any, image_size: Any) -> str:
    if num_frames is None or image_size is None:
        return (
            "Use the clip length and size the encoder was trained on (see the training configuration); other "
            "sizes run, but the features are best at the trained one."
        )
    return (
        f"`config.json` records {num_frames}-frame clips at {image_size}x{image_size}; other clip lengths and "
        "sizes run, but the features are best at the size the encoder was trained on."
    )


def _method_hparams(config: Mapping) -> str:
    keys = [
        k
        for k in config
        if k not in _GENERIC_CONFIG_KEYS and k not in _ENCODER_KEYS and not k.startswith("_")
    ]
    keys = [k for k in keys if not isinstance(config[k], dict)]
    if not keys:
        return ""
    lines = [
        "Method and backbone settings recorded in `config.json`:",
        "",
        "| Setting | Value |",
        "|---|---|",
    ]
    lines += [f"| `{k}` | {_md_value(config[k])} |" for k in keys]
    return "\n".join(lines)


def _flatten(config: Mapping, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def _redact(config: Any) -> Any:
    if isinstance(config, Mapping):
        return {k: "<redacted>" if _SECRET_KEY.search(str(k)) else _redact(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_redact(v) for v in config]
    return config


def _training_section(train_config: Mapping | None, dataset_name: str | None) -> str:
    if train_config is None:
        lines = [
            "No training configuration was given when this card was written, so the pretraining data and "
            "recipe are not recorded here."
        ]
        if dataset_name:
            lines.append(f"\nPretraining data (as stated by the publisher): `{dataset_name}`.")
        return "\n".join(lines)

    config = _redact(train_config)
    flat = _flatten(config)
    rows = []
    if dataset_name:
        rows.append(("Pretraining data", "(stated by the publisher)", f"`{dataset_name}`"))
    for label, names in _TRAIN_SUMMARY_KEYS:
        for name in names:
            hits = [p for p in flat if p.rsplit(".", 1)[-1] == name and flat[p] is not None]
            if hits:
                path = min(hits, key=lambda p: p.count("."))  # the shallowest key wins
                rows.append((label, f"`{path}`", _md_value(flat[path])))
                break
    lines = ["From the run's resolved training configuration:", ""]
    if rows:
        lines += ["| Setting | Config key | Value |", "|---|---|---|"]
        lines += [f"| {label} | {key} | {value} |" for label, key, value in rows]
        lines.append("")
    dumped = yaml.safe_dump(json.loads(json.dumps(config, default=str)), sort_keys=False, allow_unicode=True)
    lines += [
        "<details>",
        "<summary>Full resolved training configuration</summary>",
        "",
        "```yaml",
        dumped.rstrip(),
        "```",
        "",
        "</details>",
    ]
    return "\n".join(lines)


def render_model_card(
    method: str | None,
    model_dir: str | Path,
    *,
    model_id: str,
    train_config: Mapping | None = None,
    eval_results: Any = None,
    dataset_name: str | None = None,
    base_model: str | None = None,
    pipeline_tag: str | None = None,
    license: str = "apache-2.0",
    template_dir: str | Path | None = None,
) -> ModelCard:
    """Render the model card of a saved hf_vssl encoder.

    Args:
        method: "mlfo", "ctrlaug" or "hdc"; None reads it from `config.json`'s `model_type`.
        model_dir: folder written by `save_pretrained` (needs `config.json`).
        model_id: the Hub repo id the card is for (used in the loading snippets and as the model-index name).
        train_config: the run's resolved training config (shown as a summary table plus the full YAML).
        eval_results: results measured by hf_vssl (see the module docstring); None gives "not evaluated".
        dataset_name: pretraining dataset (a Hub dataset id where there is one); goes into `datasets`.
        base_model: Hub id of the checkpoint this one derives from (for fine-tuned encoders).
        pipeline_tag: Hub pipeline tag; defaults to "video-classification" for classification heads, else none.
        license: the `license` metadata field (the code's licence; weights also inherit their data's terms).
        template_dir: folder with `<method>.md` templates (default: the package's `model_cards/`).

    Returns:
        a `huggingface_hub.ModelCard` whose metadata carries library_name, tags, datasets, metrics and the
        `model-index` built from `eval_results`.
    """
    folder = _model_dir(model_dir)
    config = _read_model_config(folder)
    method = _resolve_method(method, config, folder / "config.json")
    spec = get_method(method)
    records = parse_eval_results(eval_results)
    if train_config is not None and not isinstance(train_config, Mapping):
        raise ValueError(f"train_config must be a mapping, got {type(train_config).__name__}")

    architectures = config.get("architectures") or []
    architecture = str(architectures[0]) if architectures else spec.model.__name__
    if pipeline_tag is None and any(_is_classifier(str(a)) for a in architectures):
        pipeline_tag = "video-classification"
    model_name = model_id.rstrip("/").rsplit("/", 1)[-1]
    feature_dim = _feature_dim(config)
    num_frames, image_size = config.get("num_frames"), config.get("image_size")
    if isinstance(image_size, (list, tuple)):
        image_size = image_size[-1]

    template, template_path = _load_template(method, template_dir)
    body = fill_template(
        template,
        {
            "model_id": model_id,
            "model_name": model_name,
            "hf_vssl_version": _hf_vssl_version(),
            # What `AutoModel` returns, whichever head was saved.
            "encoder_class": spec.model.__name__,
            "feature_dim": feature_dim if feature_dim is not None else "D",
            "num_frames": num_frames if num_frames is not None else 16,
            "image_size": image_size if image_size is not None else 112,
            "encoder_table": _encoder_table(config, method, architecture),
            "method_hparams": _method_hparams(config),
            "training_section": _training_section(train_config, dataset_name),
            "results_section": _results_section(records),
            "clip_note": _clip_note(num_frames, image_size),
            "classifier_note": _classifier_note(config, architecture, model_id),
            "classifier_snippet": _classifier_snippet(architecture, model_id),
        },
        source=str(template_path),
    )
    body = re.sub(r"\n{3,}", "\n\n", body)  # empty optional sections leave blank runs

    tags = ["video", "self-supervised", "custom_code", "hf_vssl", method, f"arxiv:{spec.card.arxiv_id}"]
    if isinstance(config.get("backbone"), str):
        tags.append(config["backbone"])
    metrics = sorted({rec.metric_type_and_name[0] for rec in records}) or None
    card_data = ModelCardData(
        library_name="transformers",
        license=license,
        tags=tags,
        datasets=[dataset_name] if dataset_name else None,
        metrics=metrics,
        base_model=base_model,
        pipeline_tag=pipeline_tag,
        model_name=model_name if records else None,
        eval_results=[rec.to_eval_result() for rec in records] or None,
    )
    marker = f"<!-- hf_vssl card: model_id={model_id} method={method} -->"
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{marker}\n\n{body.strip()}\n")


def write_model_card(
    model_dir: str | Path,
    method: str | None = None,
    *,
    model_id: str | None = None,
    train_config: Mapping | None = None,
    eval_results: Any = None,
    dataset_name: str | None = None,
    base_model: str | None = None,
    pipeline_tag: str | None = None,
    license: str = "apache-2.0",
    template_dir: str | Path | None = None,
) -> Path:
    """Render the card (see `render_model_card`) and write it as `README.md` into the model folder.

    `model_id` defaults to the folder's name; pass the Hub repo id the folder will be pushed to.
    Returns the path of the written README.md.
    """
    folder = _model_dir(model_dir)
    card = render_model_card(
        method,
        folder,
        model_id=model_id or folder.resolve().name,
        train_config=train_config,
        eval_results=eval_results,
        dataset_name=dataset_name,
        base_model=base_model,
        pipeline_tag=pipeline_tag,
        license=license,
        template_dir=template_dir,
    )
    path = folder / "README.md"
    card.save(path)
    return path


# --------------------------------------------------------------------------------------------------------------
# Pushing


def _check_pushable(folder: Path) -> None:
    """Fail before any network call on folders that could not be loaded from the Hub."""
    config = _read_model_config(folder)
    if not _has_weights(folder):
        raise FileNotFoundError(
            f"{folder} has no model weights (model.safetensors); save the model there first"
        )
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
        logger.warning(
            "%s has no auto_map: loading it from the Hub will need `import hf_vssl` (no trust_remote_code path)",
            folder / "config.json",
        )


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
    folder = _model_dir(model_dir)
    _check_pushable(folder)
    readme = folder / "README.md"
    if not readme.is_file():
        logger.warning(
            "%s has no README.md; the repo gets no model card (run `python -m hf_vssl.hub card %s` first)",
            folder,
            folder,
        )
    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    repo_id = repo_url.repo_id
    if readme.is_file():
        marker = _CARD_MARKER.search(readme.read_text(encoding="utf-8"))
        if marker and marker.group(1) != repo_id:
            logger.warning(
                "README.md was rendered for %s but is pushed to %s; its loading snippets name the wrong repo "
                "(re-render with `python -m hf_vssl.hub card %s --model-id %s`)",
                marker.group(1),
                repo_id,
                folder,
                repo_id,
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
    parser = argparse.ArgumentParser(prog="python -m hf_vssl.hub", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    card = sub.add_parser("card", help="write README.md (the model card) into a saved model folder")
    card.add_argument("model_dir", help="folder written by save_pretrained")
    card.add_argument("--method", choices=sorted(METHODS), help="default: config.json's model_type")
    card.add_argument("--model-id", help="Hub repo id the card is for (default: the folder name)")
    card.add_argument("--config", help="the run's resolved training config (YAML or JSON)")
    card.add_argument("--results", nargs="+", default=None, help="results JSON file(s) from the evaluation")
    card.add_argument(
        "--variant",
        default=DEFAULT_RESULTS_VARIANT,
        help="the evaluated model whose results go on the card, in results files keyed by model "
        "(training/evaluate.py --output_json)",
    )
    card.add_argument("--dataset-name", help="pretraining dataset (Hub id where there is one)")
    card.add_argument("--base-model", help="Hub id this checkpoint derives from")
    card.add_argument("--pipeline-tag", help="Hub pipeline tag")
    card.add_argument("--license", default="apache-2.0")

    push = sub.add_parser("push", help="create the Hub repo if needed and upload a saved model folder")
    push.add_argument("model_dir", help="folder written by save_pretrained")
    push.add_argument("repo_id", help="org/name on the Hub")
    push.add_argument("--private", action="store_true", help="create the repo as private")
    push.add_argument("--commit-message", default=DEFAULT_COMMIT_MESSAGE)
    push.add_argument("--revision", help="branch to push to (default: main)")
    push.add_argument("--token", help="Hub token (default: HF_TOKEN or the stored login)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "card":
            path = write_model_card(
                args.model_dir,
                args.method,
                model_id=args.model_id,
                train_config=load_train_config(args.config) if args.config else None,
                eval_results=load_eval_results(args.results, variant=args.variant) if args.results else None,
                dataset_name=args.dataset_name,
                base_model=args.base_model,
                pipeline_tag=args.pipeline_tag,
                license=args.license,
            )
            print(path)
        else:
            commit = push_folder(
                args.model_dir,
                args.repo_id,
                private=args.private,
                token=args.token,
                commit_message=args.commit_message,
                revision=args.revision,
            )
            print(commit.commit_url)
    except HfHubHTTPError as exc:  # before OSError, which it subclasses
        print(f"hf_vssl.hub: the Hub refused the request: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError) as exc:
        print(f"hf_vssl.hub: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
