"""Run configuration of the training scripts: a YAML file, overridden from the command line, validated once.

Parsing is transformers' `HfArgumentParser`: one option per field of the arguments dataclass, typed by its
annotation, with the field's help text from the dataclass's `Args:` docstring, so `--help` lists every option.
On top of it, `parse_arguments` reads `--config` (a YAML file or the name of a packaged config, whose values
become the defaults the command line overrides) and nested keys: `--model.KEY VALUE` / `--recipe.KEY VALUE` set
one keyword argument of the method's config class / view recipe, checked against that class's fields.

Keys follow the Hugging Face example scripts (`--output_dir`, `--per_device_train_batch_size`, ...). The method
and everything method-specific live in two mappings, `model` and `recipe`, so the loop needs no knowledge of any
method. Every mistake (an unknown key in the file or on the command line, a value of the wrong type, a path that
does not exist) is a `hf_vssl.cli.UsageError` that names it and, where it can, suggests the right name.
"""

import argparse
import dataclasses
import difflib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml
from huggingface_hub.errors import StrictDataclassError
from transformers import HfArgumentParser

from hf_vssl.cli import MissingPathError, UsageError
from hf_vssl.methods import find_config, get_method, packaged_configs


@dataclass
class PretrainArguments:
    """Everything a pretraining run reads; the packaged configs (`hf_vssl/configs/*.yaml`) are commented examples.

    Args:
        method: the method to pretrain: mlfo, ctrlaug, hdc, or "module:ATTRIBUTE" naming a `MethodSpec` defined
            elsewhere.
        model: keyword arguments of the method's config class (backbone, sizes, hyper-parameters) as a YAML
            mapping; `--model.KEY VALUE` sets one of them.
        recipe: keyword arguments of the method's view recipe (clip sampling and augmentation) as a YAML
            mapping; `--recipe.KEY VALUE` sets one of them.
        train_dir: training videos: a folder (class sub-folders give labels), .tar shards, .parquet files, a
            glob or an hf:// path.
        dataset_name: training videos from a Hub dataset with a video column, instead of `train_dir`.
        dataset_split: the split of `train_dir` / `dataset_name` to train on.
        validation_dir: labelled videos for the kNN monitor during training and the final evaluation.
        dataloader_num_workers: DataLoader worker processes that decode videos, per process.
        dataloader_persistent_workers: keep the workers across epochs (no restart stall at an epoch boundary).
        shuffle_buffer_size: videos in the streaming shuffle buffer (0: no shuffling).
        output_dir: folder for checkpoints, logs, the resolved run config and the released model (`final/`).
        overwrite_output_dir: replace the run already in `output_dir` (only the files a run writes).
        num_train_epochs: passes over the training videos.
        max_steps: stop after this many optimizer steps (-1: train `num_train_epochs` epochs).
        per_device_train_batch_size: videos per batch on each process.
        gradient_accumulation_steps: batches whose gradients add up to one optimizer step.
        optimizer: adam, adamw or sgd.
        learning_rate: the base learning rate.
        weight_decay: weight decay of every trainable parameter.
        momentum: momentum of sgd.
        lr_decay_epochs: epochs at which the learning rate is multiplied by `lr_decay_factor`.
        lr_decay_factor: the factor of each learning-rate decay.
        max_grad_norm: clip the gradient norm to this (none: no clipping).
        mixed_precision: no, fp16 or bf16.
        torch_compile: compile the model with torch.compile.
        torch_compile_backend: torch.compile's backend (inductor; aot_eager or eager capture graphs without code
            generation).
        channels_last: store the model and clips channels-last (channels_last_3d); default: on CUDA only.
        seed: seed of the weights, the sample order and the augmentations.
        checkpointing_steps: save a resumable checkpoint every this many optimizer steps.
        checkpoints_total_limit: keep this many newest checkpoints (none: keep all).
        resume_from_checkpoint: a checkpoint folder to resume from, or "latest" for the newest in `output_dir`.
        logging_steps: log the loss terms every this many optimizer steps.
        report_to: trackers: jsonl (always available), tensorboard, wandb, ... when installed.
        knn_monitor_epochs: run the kNN monitor on `validation_dir` every this many epochs.
        record_sample_keys: write the keys of the videos each process trained on (sample_keys_rank*.txt).
        push_to_hub: push the released model to the Hub at the end (needs `hub_model_id`).
        hub_model_id: the Hub repo (org/name) to push to.
    """

    method: str = "mlfo"
    model: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    # data
    train_dir: str | None = None
    dataset_name: str | None = None
    dataset_split: str = "train"
    validation_dir: str | None = None
    dataloader_num_workers: int = 2
    dataloader_persistent_workers: bool = True
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
    torch_compile_backend: str = "inductor"
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
            raise UsageError(
                "Give the training data with `--train_dir` (folder or shards) or `--dataset_name` (Hub id)."
            )
        if self.output_dir is None:
            raise UsageError("`--output_dir` is required.")
        for name in ("train_dir", "validation_dir"):
            check_local_path(name, getattr(self, name))
        if self.resume_from_checkpoint != "latest":
            check_local_path("resume_from_checkpoint", self.resume_from_checkpoint)
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"`optimizer` must be one of {sorted(OPTIMIZERS)}, got {self.optimizer!r}.")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise UsageError(f"`mixed_precision` must be no, fp16 or bf16, got {self.mixed_precision!r}.")
        for name in (
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "checkpointing_steps",
            "logging_steps",
            "knn_monitor_epochs",
        ):
            if getattr(self, name) < 1:
                raise UsageError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        if self.max_steps <= 0 and self.num_train_epochs < 1:
            raise UsageError("Train for at least one epoch (`num_train_epochs`) or give `max_steps`.")
        if self.push_to_hub and not self.hub_model_id:
            raise UsageError("`--push_to_hub` needs `--hub_model_id`.")
        # The method's config and view recipe are built now: a misspelt key or a wrong value stops the run before
        # it writes anything, instead of training silently (an unknown key) or failing after the data is read.
        try:
            spec = get_method(self.method)
            spec.check_keys(self.model, self.recipe)
            spec.build_recipe(spec.build_config(**self.model), **self.recipe)
        except (ImportError, TypeError, ValueError, StrictDataclassError) as error:
            raise UsageError(str(error.__cause__ or error)) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


OPTIMIZERS = ("adam", "adamw", "sgd")


def check_local_path(name: str, value: str | None) -> None:
    """A data path that is local (not ``hf://`` or a glob) must exist: fail before any process starts work."""
    if value is None or value.startswith("hf://") or any(char in value for char in "*?["):
        return
    if not Path(value).expanduser().exists():
        raise MissingPathError(f"--{name} {value} does not exist.")


# What the Hub accepts as a model id: "name" or "org/name" (letters, digits, "-", "_", ".").
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def check_model_path(name: str, value: str | None) -> None:
    """A model that is neither an existing folder nor a possible Hub id is a missing folder: say so, rather than
    let transformers report "Repo id must be in the form ..." (or try the network for `runs/x`, whose `runs/`
    exists here)."""
    if value is None:
        return
    if Path(value).expanduser().is_dir():
        if not (Path(value).expanduser() / "config.json").is_file():
            raise MissingPathError(
                f"--{name} {value} is not a saved model folder (no config.json); a training run saves its "
                "model in OUTPUT_DIR/final."
            )
        return
    looks_local = (
        not _HUB_ID.match(value)
        or value.startswith(".")
        or (len(Path(value).parts) > 1 and Path(Path(value).parts[0]).expanduser().is_dir())
    )
    if looks_local:
        raise MissingPathError(f"--{name} {value}: no such model folder (a Hub model id reads 'org/name').")


def field_help(cls) -> dict[str, str]:
    """Each field's help text, from the `Args:` section of the dataclass's docstring (`name: text`, continued
    on more deeply indented lines), the one place where an option is documented."""
    docs: dict[str, str] = {}
    lines = (cls.__doc__ or "").splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "Args:"]
    if not starts:
        return docs
    entry_indent, current = None, None
    for line in lines[starts[0] + 1 :]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if entry_indent is None:
            entry_indent = indent
        if indent < entry_indent:
            break
        match = re.match(r"(\w+)(?: \(.*?\))?:\s*(.*)$", line.strip())
        if indent == entry_indent and match:
            current = match.group(1)
            docs[current] = match.group(2)
        elif current is not None:
            docs[current] += " " + line.strip()
    return docs


def _is_mapping(annotation) -> bool:
    return get_origin(annotation) is dict or annotation is dict


def _yaml_mapping(text: str) -> dict:
    value = yaml.safe_load(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a YAML mapping such as '{{key: value}}', got {text!r}")
    return value


class RunArgumentParser(HfArgumentParser):
    """`HfArgumentParser` over one arguments dataclass, plus `--config`, help texts from the dataclass's
    docstring, and errors raised as `UsageError` (one `error:` line under `hf_vssl.cli.command_line`)."""

    def __init__(self, cls, description: str = "", prog: str | None = None):
        # before HfArgumentParser replaces each Field's `X | None` type by `X`
        self.run_types = get_type_hints(cls)
        mappings = [name for name, annotation in self.run_types.items() if _is_mapping(annotation)]
        nested = " and ".join(f"`--{name}.KEY VALUE`" for name in mappings)
        super().__init__(
            cls,
            prog=prog,
            description=description,
            epilog="Options override the --config file's values."
            + (f" {nested} set one field of a mapping option." if nested else ""),
            allow_abbrev=False,  # `--learning_rat` is a mistake, not a prefix of --learning_rate
        )
        self.add_argument(
            "--config",
            help="YAML file of run arguments, or the name of a packaged config: "
            + ", ".join(packaged_configs()),
        )
        docs = field_help(cls)
        for action in self._actions:
            if action.dest in docs:
                action.help = docs[action.dest].replace("%", "%%")

    @staticmethod
    def _parse_dataclass_field(parser, field):
        if _is_mapping(field.type):  # `--model '{backbone: r3d}'`; HfArgumentParser has no mapping type
            parser.add_argument(
                f"--{field.name}", type=_yaml_mapping, default=argparse.SUPPRESS, metavar="MAPPING"
            )
            return
        HfArgumentParser._parse_dataclass_field(parser, field)

    def error(self, message: str):
        raise UsageError(message)


def _coerce(name: str, value: Any, annotation) -> Any:
    """`value` (from YAML) as the field's type, or an error that names the key.

    YAML reads `1e-4` as a string and `70` as an int, so floats are parsed and a single value becomes a list
    where the field is a list.
    """
    # a union lists its members; a list or dict type is one kind (its arguments are the items' types)
    types = (annotation,) if get_origin(annotation) in (list, dict) else get_args(annotation) or (annotation,)
    if value is None:
        if type(None) in types:
            return None
        raise UsageError(f"`{name}` needs a value, got none.")
    for kind in (t for t in types if t is not type(None)):
        if get_origin(kind) is list:
            items = value if isinstance(value, (list, tuple)) else [value]
            (item_type,) = get_args(kind) or (Any,)
            return [_coerce(name, item, item_type) for item in items]
        if kind is Any or (_is_mapping(kind) and isinstance(value, dict)):
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
    raise UsageError(f"`{name}` must be {expected}, got {value!r}.")


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        merged[key] = (
            _merge(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else value
        )
    return merged


def _suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _split_nested(argv: list[str], mappings: set[str], known: set[str]) -> tuple[list[str], dict]:
    """`--model.KEY VALUE` / `--model.KEY=VALUE` pulled out of `argv` as `{"model": {KEY: VALUE}}` (YAML values)."""
    rest, nested = [], {}
    index = 0
    while index < len(argv):
        token = argv[index]
        key, _, inline = token[2:].partition("=") if token.startswith("--") else ("", "", "")
        name, dot, inner = key.partition(".")
        if not dot:
            rest.append(token)
            index += 1
            continue
        if name not in mappings:
            if name in known:
                raise UsageError(f"--{key}: only {' and '.join(sorted(mappings))} take nested keys.")
            raise UsageError(f"Unknown option --{key}{_suggest(name, sorted(mappings))}")
        if not inline and (index + 1 == len(argv) or argv[index + 1].startswith("--")):
            raise UsageError(f"Option --{key} needs a value.")
        text = inline if inline else argv[index + 1]
        nested = _merge(nested, {name: {inner: yaml.safe_load(text)}})
        index += 1 if inline else 2
    return rest, nested


def parse_arguments(argv: list[str] | None = None, cls=PretrainArguments, description: str = "") -> Any:
    """The run arguments of `cls` from `--config FILE` and `--key value` overrides.

    Raises `UsageError` for every mistake, with the key it concerns and the closest known name.
    """
    argv = sys.argv[1:] if argv is None else [str(token) for token in argv]
    parser = RunArgumentParser(cls, description=description)
    types = parser.run_types
    mappings = {name for name, annotation in types.items() if _is_mapping(annotation)}
    argv, nested = _split_nested(argv, mappings, set(types))

    file_values: dict[str, Any] = {}
    config_parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    config_parser.add_argument("--config")
    config_name = config_parser.parse_known_args(argv)[0].config
    if config_name:
        path = find_config(config_name)
        file_values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(file_values, dict):
            raise UsageError(f"{path} must hold a mapping of run arguments.")
        for key in file_values:
            if key not in types:
                raise UsageError(f"Unknown key {key!r} in {config_name}{_suggest(key, sorted(types))}")
        file_values = {key: _coerce(key, value, types[key]) for key, value in file_values.items()}
        parser.set_defaults(**{k: v for k, v in file_values.items() if k not in mappings})

    namespace, extras = parser.parse_known_args(argv)
    if extras:
        token = extras[0]
        if not token.startswith("-"):
            raise UsageError(f"Unexpected argument {token!r}; options look like `--key value`.")
        option = token.partition("=")[0]
        known = sorted(s for action in parser._actions for s in action.option_strings if s.startswith("--"))
        raise UsageError(f"Unknown option {option}{_suggest(option, known)}")

    values = {}
    for name, annotation in types.items():
        value = getattr(namespace, name, None)  # a mapping option that is not given is not in the namespace
        if name in mappings:  # the file's mapping, updated by `--model MAPPING`, then by `--model.KEY VALUE`
            value = _merge(_merge(file_values.get(name, {}), value or {}), nested.get(name, {}))
        values[name] = _coerce(name, value, annotation)
    arguments = cls(**values)
    try:
        arguments.validate()
    except UsageError:
        raise
    except ValueError as error:  # a script's own checks: the same one-line error
        raise UsageError(str(error)) from None
    return arguments


# The resolved run configuration every training script writes (into its output folder and its released model).
RUN_CONFIG = "run_config.yaml"


def save_arguments(arguments, path: str | Path) -> None:
    """Write the resolved run configuration (YAML), so every output says exactly how it was made."""
    Path(path).write_text(yaml.safe_dump(json.loads(json.dumps(arguments.to_dict())), sort_keys=False))
