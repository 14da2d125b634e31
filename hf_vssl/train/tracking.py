"""Logging for the training scripts: a JSON-lines tracker that is always on, and the optional accelerate ones."""

import importlib.util
import json
import time
from pathlib import Path

from accelerate.tracking import GeneralTracker


class JsonLinesTracker(GeneralTracker):
    """Appends one JSON object per `log` call to `<logging_dir>/metrics.jsonl` (main process only).

    `__init__` is deliberately not decorated with `on_main_process`: that builds a `PartialState` before the
    `Accelerator` and silently turns a multi-process CPU run into single-process ones.
    """

    name = "jsonl"
    requires_logging_directory = True

    def __init__(self, run_name: str, logging_dir: str | Path):
        super().__init__()
        self.run_name = run_name
        self.path = Path(logging_dir) / "metrics.jsonl"

    @property
    def tracker(self):
        return self.path

    def store_init_configuration(self, values: dict):
        self._append({"event": "config", "config": values})

    def log(self, values: dict, step: int | None = None, **kwargs):
        self._append({"step": step, "time": round(time.time(), 3), **values})

    def _append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as stream:
            stream.write(json.dumps(record, default=float) + "\n")


OPTIONAL_TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb"}


def build_trackers(report_to: list[str], logging_dir: Path, logger) -> list:
    """JSON lines always, plus each requested accelerate tracker whose package is installed (a warning otherwise)."""
    trackers: list = [JsonLinesTracker("hf_vssl", logging_dir)]
    for name in report_to:
        if name in ("jsonl", "none"):
            continue
        if name not in OPTIONAL_TRACKERS:
            raise ValueError(
                f"Unknown tracker {name!r} in --report_to; choose from jsonl, {', '.join(OPTIONAL_TRACKERS)}."
            )
        if importlib.util.find_spec(OPTIONAL_TRACKERS[name]) is None:
            logger.warning(
                f"--report_to {name}: the {OPTIONAL_TRACKERS[name]} package is not installed; not logging to it."
            )
            continue
        trackers.append(name)
    return trackers
