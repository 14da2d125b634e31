"""The method table: everything the package knows about each method, in one place.

A method is one `MethodSpec`: its configuration class, the encoder it releases, the classifier on that encoder,
its pretraining model, its view recipe, what its model card says about it and its YAML configs. Registration
with the transformers Auto classes (`hf_vssl/__init__.py`), the training loop, the demo, evaluation, the Hub code
and the shared tests read `METHODS`; nothing else keys on a method's name. Adding a method is a configuration
file, a modeling file, a view recipe, a card template, YAML configs and one `register_method(MethodSpec(...))`,
which also works from outside the package (tests register a toy method that way).

This module is not shipped with checkpoints (model code never imports it), and the recipe is named by a dotted
path, so `import hf_vssl` does not import the data engine (datasets, PyAV).
"""

import difflib
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, AutoModelForVideoClassification

# The module-level Auto classes: without torchvision the top-level names are placeholders.
from transformers.models.auto.image_processing_auto import AutoImageProcessor
from transformers.models.auto.video_processing_auto import AutoVideoProcessor

from .cli import MissingPathError
from .configuration_ctrlaug import CtrlAugConfig
from .configuration_hdc import HDCConfig
from .configuration_mlfo import MLFOConfig
from .image_processing_vssl import VideoSSLImageProcessor
from .modeling_ctrlaug import CtrlAugForPreTraining, CtrlAugForVideoClassification, CtrlAugModel
from .modeling_hdc import HDCForPreTraining, HDCForVideoClassification, HDCModel
from .modeling_mlfo import MLFOForPreTraining, MLFOForVideoClassification, MLFOModel
from .video_processing_vssl import VideoSSLVideoProcessor

__all__ = [
    "METHODS",
    "CONFIG_DIR",
    "CardInfo",
    "MethodSpec",
    "find_config",
    "get_method",
    "packaged_configs",
    "register_method",
]

# The YAML run configurations of every method, shipped as package data (`MethodSpec.configs` names files in it),
# so that a regular install runs them as a clone does.
CONFIG_DIR = Path(str(resources.files(__package__) / "configs"))
# Where the configs were before they shipped with the package: `--config training/configs/x.yaml` still works.
_FORMER_CONFIG_DIR = ("training", "configs")


def packaged_configs() -> list[str]:
    """The names of the packaged run configurations (`--config NAME` of the training scripts)."""
    return sorted(path.stem for path in CONFIG_DIR.glob("*.yaml"))


def find_config(name_or_path: str | Path) -> Path:
    """The YAML file of `--config`: a file that exists, or a packaged config named with or without `.yaml`
    (`mlfo_r3d18_k400`), also under its former path (`training/configs/mlfo_r3d18_k400.yaml`)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if path.parent == Path(".") or path.parent.parts[-2:] == _FORMER_CONFIG_DIR:
        packaged = CONFIG_DIR / (path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml")
        if packaged.is_file():
            return packaged
    close = difflib.get_close_matches(path.stem, packaged_configs(), n=1)
    hint = (
        f"; did you mean {close[0]!r}?" if close else f"; packaged configs: {', '.join(packaged_configs())}"
    )
    raise MissingPathError(f"Config file {name_or_path} does not exist and is not a packaged config{hint}")


@dataclass(frozen=True)
class CardInfo:
    """What a model card says about a method beyond its template.

    Args:
        display_name: the method's name in prose ("MLFO").
        arxiv_id: the paper, tagged `arxiv:<id>` on the Hub.
        template: the card template; `None` is the package's `model_cards/<method>.md`.
    """

    display_name: str
    arxiv_id: str
    template: str | Path | None = None


@dataclass(frozen=True)
class MethodSpec:
    """One method of the package.

    Args:
        name: the method's key: its configs' `model_type`, `--method` of the training scripts.
        config: the configuration class (`XConfig`).
        model: the released encoder (`XModel`): what `AutoModel` loads.
        classifier: the encoder with a linear head (`XForVideoClassification`).
        pretraining: the pretraining model (`XForPreTraining`), `None` while the method has none.
        recipe: the view recipe as `"module:Class"`, imported when first needed.
        card: see `CardInfo`.
        configs: run configurations by role (`"demo"`, `"k400"`, ...): YAML file names in `CONFIG_DIR` or paths.
    """

    name: str
    config: type
    model: type
    classifier: type
    pretraining: type | None
    recipe: str
    card: CardInfo
    configs: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.config.model_type != self.name:
            raise ValueError(
                f"MethodSpec {self.name!r}: its config class {self.config.__name__} has model_type "
                f"{self.config.model_type!r}; they must be the same."
            )
        if ":" not in self.recipe:
            raise ValueError(
                f"MethodSpec {self.name!r}: recipe must read 'module:Class', got {self.recipe!r}."
            )

    def recipe_class(self) -> type:
        module, _, name = self.recipe.partition(":")
        return getattr(importlib.import_module(module), name)

    def check_keys(self, model: Mapping = (), recipe: Mapping = ()) -> None:
        """Raise a `ValueError` that suggests a name for a key of a run's `model` values that is no field of the
        config class, or of its `recipe` values that is no field of the view recipe (checked before a run
        starts, so a misspelt setting never trains silently)."""
        _check_fields("model", self.config, model)
        if recipe:
            _check_fields("recipe", self.recipe_class(), recipe)

    def build_config(self, **values):
        """The method's configuration from run-config values; an unknown key is an error that suggests a name."""
        _check_fields("model", self.config, values)
        return self.config(**values)

    def build_recipe(self, config, **overrides):
        """The method's view recipe sized like `config` (clip length, crop size), with field overrides."""
        return self.recipe_class().from_config(config, **overrides)

    def build_pretraining_model(self, **config_values):
        if self.pretraining is None:
            raise NotImplementedError(f"{self.name} has no pretraining model in this version of hf_vssl.")
        return self.pretraining(self.build_config(**config_values))

    def config_file(self, role: str) -> Path:
        if role not in self.configs:
            raise KeyError(f"{self.name} has no {role!r} config; it has {sorted(self.configs)}.")
        path = Path(self.configs[role])
        return path if path.is_absolute() else CONFIG_DIR / path


def _check_fields(kind: str, cls: type, keys) -> None:
    known = sorted(f.name for f in fields(cls) if f.init)
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; its fields: {', '.join(known)}"
            raise ValueError(f"{kind}.{key}: {cls.__name__} has no field {key!r}{hint}")


METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add a method to the table and register its classes with the transformers Auto classes."""
    METHODS[spec.name] = spec
    AutoConfig.register(spec.name, spec.config, exist_ok=True)
    AutoModel.register(spec.config, spec.model, exist_ok=True)
    AutoModelForVideoClassification.register(spec.config, spec.classifier, exist_ok=True)
    if spec.pretraining is not None:
        AutoModelForPreTraining.register(spec.config, spec.pretraining, exist_ok=True)
    # One torch-only class for both backends: AutoImageProcessor asks for "torchvision" when it is installed.
    AutoImageProcessor.register(
        spec.config,
        image_processor_classes={"pil": VideoSSLImageProcessor, "torchvision": VideoSSLImageProcessor},
        exist_ok=True,
    )
    # Positional: the keyword differs between transformers 5.17 and 5.23.
    AutoVideoProcessor.register(spec.config, VideoSSLVideoProcessor, exist_ok=True)
    return spec


def get_method(name: str) -> MethodSpec:
    """The spec of a registered method, or of a method defined elsewhere, named `"module:attribute"`.

    The second form lets the training scripts run a method that lives outside the package (importing the module
    registers its `MethodSpec`). An unknown name is an error that lists the methods there are.
    """
    if ":" in name:
        module, _, attribute = name.partition(":")
        spec = getattr(importlib.import_module(module), attribute, None)
        if not isinstance(spec, MethodSpec):
            raise ValueError(f"{name!r} does not name a MethodSpec.")
        return register_method(spec)
    if name not in METHODS:
        close = difflib.get_close_matches(name, METHODS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Unknown method {name!r}; choose one of {sorted(METHODS)}.{hint}")
    return METHODS[name]


register_method(
    MethodSpec(
        name="mlfo",
        config=MLFOConfig,
        model=MLFOModel,
        classifier=MLFOForVideoClassification,
        pretraining=MLFOForPreTraining,
        recipe="hf_vssl.data.recipes:MLFOViews",
        card=CardInfo("MLFO", "2108.02183"),
        configs={
            "demo": "mlfo_tiny_demo.yaml",
            "k400": "mlfo_r3d18_k400.yaml",
            "ucf101": "mlfo_r3d18_ucf101.yaml",
        },
    )
)
register_method(
    MethodSpec(
        name="ctrlaug",
        config=CtrlAugConfig,
        model=CtrlAugModel,
        classifier=CtrlAugForVideoClassification,
        pretraining=CtrlAugForPreTraining,
        recipe="hf_vssl.data.recipes:CtrlAugViews",
        card=CardInfo("ctrlaug", "2203.16632"),
        configs={
            "demo": "ctrlaug_tiny_demo.yaml",
            "k400": "ctrlaug_r3d18_k400.yaml",
            "k400_r2plus1d": "ctrlaug_r2plus1d18_k400.yaml",
            "ucf101": "ctrlaug_r3d18_ucf101.yaml",
        },
    )
)
register_method(
    MethodSpec(
        name="hdc",
        config=HDCConfig,
        model=HDCModel,
        classifier=HDCForVideoClassification,
        pretraining=HDCForPreTraining,
        recipe="hf_vssl.data.recipes:HDCViews",
        card=CardInfo("HDC", "2011.11261"),
        configs={
            "demo": "hdc_tiny_demo.yaml",
            "k400": "hdc_r3d18_k400.yaml",
            "k400_r2plus1d": "hdc_r2plus1d18_k400.yaml",
            "ucf101": "hdc_r3d18_ucf101.yaml",
        },
    )
)
