"""Run configuration of the training scripts: a YAML file, overridden from the command line, validated once.

Keys follow the Hugging Face example scripts (`--output_dir`, `--per_device_train_batch_size`, ...). The method
and everything method-specific live in two mappings, `model` (keyword arguments of the method's config class) and
`recipe` (of its view recipe), so the loop needs no knowledge of any method. An unknown key, in the file or on
the command line, is an error that names it.
"""

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml


@dataclass
class PretrainArguments:
    """Everything a pretraining run reads; see `training/configs/*.yaml` for commented examples."""

    method: str = "mlfo"
    model: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    # data
    train_dir: str | None = None
    dataset_name: str | None = None
    dataset_split: str = "train"
    validation_dir: str | None = None
    dataloader_num_workers: int = 2
    shuffle_buffer_size: int = 256
    # schedule and optimisation
    output_dir: str | None = None
    overwrite_output_dir: bool = False
    num_train_epochs: int = 1
    max_steps: int = -1
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    momentum: float = 0.9
    lr_decay_epochs: list[int] = field(default_factory=list)
    lr_decay_factor: float = 0.1
    max_grad_norm: float | None = None
    mixed_precision: str = "no"
    torch_compile: bool = False
    torch_compile_backend: str = "inductor"  # "aot_eager": graph capture without code generation (CPU tests)
    # channels_last_3d model and clips (same values, faster convolutions); default (null): on CUDA only
    channels_last: bool | None = None
    seed: int = 0
    # checkpoints, logs, outputs
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = 2
    resume_from_checkpoint: str | None = None
    logging_steps: int = 10
    report_to: list[str] = field(default_factory=lambda: ["jsonl"])
    knn_monitor_epochs: int = 1
    record_sample_keys: bool = False
    push_to_hub: bool = False
    hub_model_id: str | None = None

    def validate(self) -> None:
        if self.train_dir is None and self.dataset_name is None:
            raise ValueError(
                "Give the training data with `--train_dir` (folder or shards) or `--dataset_name` (Hub id)."
            )
        if self.output_dir is None:
            raise ValueError("`--output_dir` is required.")
        for name in ("train_dir", "validation_dir"):
            check_local_path(name, getattr(self, name))
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"`optimizer` must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}.")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"`mixed_precision` must be no, fp16 or bf16, got {self.mixed_precision!r}.")
        for name in (
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "checkpointing_steps",
            "logging_steps",
            "knn_monitor_epochs",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        if self.max_steps <= 0 and self.num_train_epochs < 1:
            raise ValueError("Train for at least one epoch (`num_train_epochs`) or give `max_steps`.")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("`--push_to_hub` needs `--hub_model_id`.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


OPTIMIZERS = ("adam", "adamw", "sgd")


def check_local_path(name: str, value: str | None) -> None:
    """A data path that is local (not ``hf://`` or a glob) must exist: fail before any process starts work."""
    if value is None or value.startswith("hf://") or any(char in value for char in "*?["):
        return
    if not Path(value).expanduser().exists():
        raise FileNotFoundError(f"--{name} {value} does not exist.")


def _parse_value(text: str, annotation) -> Any:
    """Read a command-line value; YAML syntax for lists and mappings (`--model '{a: 1}'`), text for strings."""
    value = yaml.safe_load(text)
    # a list or dict type is one kind (its arguments are the items' types), as in `_coerce`
    types = (annotation,) if get_origin(annotation) in (list, dict) else get_args(annotation) or (annotation,)
    if str in types and not isinstance(value, (str, list)) and value is not None:
        return text  # `--hub_model_id 007` stays "007"
    return value


def _coerce(name: str, value: Any, annotation) -> Any:
    """`value` (from YAML or the command line) as the field's type, or an error that names the key.

    YAML reads `1e-4` as a string and `70` as an int, so floats are parsed and a single value becomes a list
    where the field is a list.
    """
    # a union lists its members; a list or dict type is one kind (its arguments are the items' types)
    types = (annotation,) if get_origin(annotation) in (list, dict) else get_args(annotation) or (annotation,)
    if value is None:
        if type(None) in types:
            return None
        raise ValueError(f"`{name}` needs a value, got none.")
    for kind in (t for t in types if t is not type(None)):
        if get_origin(kind) is list:
            items = value if isinstance(value, (list, tuple)) else [value]
            (item_type,) = get_args(kind) or (Any,)
            return [_coerce(name, item, item_type) for item in items]
        if kind is Any or (get_origin(kind) is dict and isinstance(value, dict)):
            return value
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and not isinstance(value, bool):
            try:
                return float(value)
            except (TypeError, ValueError):
                pass
        if kind is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    expected = " or ".join(getattr(t, "__name__", str(t)) for t in types)
    raise ValueError(f"`{name}` must be {expected}, got {value!r}.")


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        merged[key] = (
            _merge(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else value
        )
    return merged


def parse_arguments(argv: list[str] | None = None, cls=PretrainArguments, description: str = "") -> Any:
    """`--config FILE.yaml` then `--key value` overrides (`--model.backbone r3d` sets a nested key)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="YAML file with the run configuration")
    known, rest = parser.parse_known_args(argv)
    values: dict[str, Any] = {}
    if known.config:
        path = Path(known.config)
        if not path.is_file():
            raise FileNotFoundError(f"Config file {path} does not exist.")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a mapping of run arguments.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"Unknown key(s) {unknown} in {known.config}; known keys: {sorted(fields)}.")
    overrides: dict[str, Any] = {}
    index = 0
    while index < len(rest):
        token = rest[index]
        if not token.startswith("--"):
            raise ValueError(f"Unexpected argument {token!r}; options look like `--key value`.")
        key, _, inline = token[2:].partition("=")
        name, _, nested = key.partition(".")
        if name not in fields:
            raise ValueError(f"Unknown option --{key}; known options: {sorted(fields)}.")
        annotation = fields[name].type
        is_list = get_origin(annotation) is list or list in get_args(annotation)
        if inline:
            text = inline
        elif annotation is bool and (index + 1 == len(rest) or rest[index + 1].startswith("--")):
            text = "true"
        elif is_list and not nested:
            # `--protocols knn retrieval`: every value up to the next option
            values_end = index + 1
            while values_end < len(rest) and not rest[values_end].startswith("--"):
                values_end += 1
            if values_end == index + 1:
                raise ValueError(f"Option --{key} needs at least one value.")
            items = [yaml.safe_load(item) for item in rest[index + 1 : values_end]]
            overrides[name] = items[0] if len(items) == 1 and isinstance(items[0], list) else items
            index = values_end
            continue
        else:
            index += 1
            if index == len(rest):
                raise ValueError(f"Option --{key} needs a value.")
            text = rest[index]
        if nested:
            overrides = _merge(overrides, {name: {nested: yaml.safe_load(text)}})
        else:
            overrides[name] = _parse_value(text, annotation)
        index += 1
    merged = _merge(values, overrides)
    arguments = cls(**{key: _coerce(key, value, fields[key].type) for key, value in merged.items()})
    arguments.validate()
    return arguments


# The resolved run configuration every training script writes (into its output folder and its released model).
RUN_CONFIG = "run_config.yaml"


def save_arguments(arguments, path: str | Path) -> None:
    """Write the resolved run configuration (YAML), so every output says exactly how it was made."""
    Path(path).write_text(yaml.safe_dump(json.loads(json.dumps(arguments.to_dict())), sort_keys=False))
