"""The results record: one format for every number hf_vssl measures, from the protocols to the model card.

An `EvalRecord` is one measured number: the protocol that measured it, the metric, the value (a fraction in
``[0, 1]``, exactly as the protocol computed it), the dataset and split it was measured on, and how the videos
were seen (``measured_with``, e.g. ``"5 clips x center crop"``). `EvalResults` holds the records of one evaluated
model. Its JSON, which `training/evaluate.py`, `training/finetune.py` and `training/pretrain.py` write and
``python -m hf_vssl.hub card --results`` renders, is::

    {"results": [{"protocol": "knn", "metric": "top1", "value": 0.4125, "dataset": "data/ucf101/test",
                  "split": "validation", "measured_with": "5 clips x center crop"}, ...]}

Protocols are ``linear_probe``, ``knn``, ``retrieval`` and ``finetune``; metrics are ``top<k>`` (accuracy) and
``R@<k>`` (retrieval recall), the keys the protocols return. Cards show percentages to one decimal (`percent`).
"""

import json
import numbers
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

# Protocol key -> the name a model card shows.
PROTOCOL_NAMES = {
    "linear_probe": "Linear probe",
    "knn": "kNN",
    "retrieval": "Retrieval",
    "finetune": "Fine-tuning",
}


def metric_type_and_name(metric: str) -> tuple[str, str]:
    """The model-index metric type and the displayed name of a metric key: ``top5`` -> accuracy, top-5 accuracy."""
    for prefix, metric_type, name in (("top", "accuracy", "top-{} accuracy"), ("R@", "recall", "Recall@{}")):
        k = metric.removeprefix(prefix)
        if k != metric and k.isdigit():
            return metric_type, name.format(k)
    raise ValueError(f"unknown metric {metric!r}: metrics are top<k> (accuracy) or R@<k> (retrieval recall)")


def describe_views(num_clips: int, spatial_crops: str) -> str:
    """How a video was seen by an evaluation: ``"5 clips x center crop"``, ``"10 clips x three crops"``."""
    return f"{num_clips} clips x {spatial_crops} crop{'' if spatial_crops == 'center' else 's'}"


@dataclass(frozen=True)
class EvalRecord:
    """One measured number: `value` (a fraction in [0, 1]) of `metric` under `protocol` on a dataset split."""

    protocol: str
    metric: str
    value: float
    dataset: str
    split: str
    measured_with: str = ""

    def __post_init__(self):
        if self.protocol not in PROTOCOL_NAMES:
            raise ValueError(f"unknown protocol {self.protocol!r}; protocols are {', '.join(PROTOCOL_NAMES)}")
        metric_type_and_name(self.metric)
        # numbers.Real admits numpy scalars; bool is an int but never a measurement.
        value = self.value
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) <= 1:
            raise ValueError(
                f"{self.protocol}/{self.metric}: value must be a fraction in [0, 1], got {value!r}"
            )
        object.__setattr__(self, "value", float(value))
        for name in ("dataset", "split", "measured_with"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        if not self.dataset:
            raise ValueError("a record needs the dataset it was measured on")

    @property
    def percent(self) -> float:
        """The value in percent, to one decimal: what a model card shows, in its text and its model-index."""
        return round(100 * self.value, 1)

    @property
    def protocol_name(self) -> str:
        return PROTOCOL_NAMES[self.protocol]

    @property
    def metric_type(self) -> str:
        """The Hub's metric type (``accuracy``, ``recall``), for model-index."""
        return metric_type_and_name(self.metric)[0]

    @property
    def metric_name(self) -> str:
        """The metric as a card names it: ``top-1 accuracy``, ``Recall@5``."""
        return metric_type_and_name(self.metric)[1]

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What a card can show once: the same metric of a protocol on one dataset split."""
        return self.protocol, self.metric, self.dataset, self.split


@dataclass
class EvalResults:
    """The records of one evaluated model; a key (protocol, metric, dataset, split) appears once."""

    records: list[EvalRecord] = field(default_factory=list)

    def __post_init__(self):
        seen = set()
        for record in self.records:
            if record.key in seen:
                raise ValueError("{} {} on {} ({}) is given twice".format(*record.key))
            seen.add(record.key)

    @classmethod
    def from_metrics(
        cls, metrics: Mapping[str, float], *, dataset: str, split: str, measured_with: str = ""
    ) -> "EvalResults":
        """Records from protocol output, ``{"knn/top1": 0.41, "retrieval/R@1": 0.33}``, measured on one split."""
        records = []
        for key, value in metrics.items():
            protocol, sep, metric = key.partition("/")
            if not sep:
                raise ValueError(f"result key {key!r} is not of the form '<protocol>/<metric>'.")
            records.append(EvalRecord(protocol, metric, value, dataset, split, measured_with))
        return cls(records)

    def __iter__(self) -> Iterator[EvalRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __add__(self, other: "EvalResults") -> "EvalResults":
        return EvalResults([*self.records, *other.records])

    def metrics(self) -> dict[str, float]:
        """Back to protocol output, ``{"knn/top1": 0.41, ...}`` (for `format_results_table`)."""
        return {f"{r.protocol}/{r.metric}": r.value for r in self.records}

    def to_json(self) -> str:
        return json.dumps({"results": [asdict(r) for r in self.records]}, indent=2)

    @classmethod
    def from_json(cls, text: str, source: str = "results") -> "EvalResults":
        """Read `to_json`'s output; any other shape, a missing or unknown key or a bad value is an error naming
        `source` and the record."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source} is not valid JSON: {exc}") from None
        if (
            not isinstance(document, dict)
            or set(document) != {"results"}
            or not isinstance(document["results"], list)
        ):
            raise ValueError(f'{source}: expected {{"results": [records]}} as written by EvalResults.to_json')
        names = [f.name for f in fields(EvalRecord)]
        records = []
        for i, item in enumerate(document["results"]):
            where = f"{source}: results[{i}]"
            if not isinstance(item, dict):
                raise ValueError(f"{where} must be an object")
            missing, unknown = set(names[:5]) - set(item), set(item) - set(names)
            if missing or unknown:
                raise ValueError(
                    f"{where}: missing {sorted(missing)}, unknown {sorted(unknown)}; keys are {names}"
                )
            try:
                records.append(EvalRecord(**item))
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
        try:
            return cls(records)
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "EvalResults":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"results file {path} does not exist")
        return cls.from_json(path.read_text(encoding="utf-8"), source=str(path))


__all__ = ["PROTOCOL_NAMES", "EvalRecord", "EvalResults", "describe_views", "metric_type_and_name"]
