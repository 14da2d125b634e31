"""The command line of hf_vssl: its console commands and how every command reports a user's mistake.

Each console command (``[project.scripts]`` in pyproject.toml) is the ``main`` of a module that also runs as
``python -m`` or, for the training scripts, as ``accelerate launch training/<script>.py``:

    hf-vssl-pretrain   hf_vssl.train.pretrain     self-supervised pretraining of any method
    hf-vssl-evaluate   hf_vssl.train.evaluate     linear probe, kNN and retrieval of a pretrained encoder
    hf-vssl-finetune   hf_vssl.train.finetune     fine-tuning a pretrained encoder into a classifier
    hf-vssl-prepare    hf_vssl.data.prepare       a video source written as WebDataset shards
    hf-vssl-demo       hf_vssl.demo               the tiny end-to-end demo (``make demo``)
    hf-vssl-hub        hf_vssl.hub                model cards and Hub pushes

A mistake in what the user asked for (an unknown or misspelt option, a path that does not exist, a value of the
wrong type) is a `UsageError`: the command prints one ``<command>: error: ...`` line and exits with status 2, as
argparse does, instead of a traceback. Library callers get the exception.
"""

import argparse
import functools
import importlib
import sys
from pathlib import Path

__all__ = [
    "COMMANDS",
    "CommandLineParser",
    "MissingPathError",
    "OutputDirTakenError",
    "UsageError",
    "command_line",
]


class UsageError(ValueError):
    """A mistake in the command line or the run configuration, reported as one ``error:`` line (exit status 2)."""


class MissingPathError(UsageError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class OutputDirTakenError(UsageError, FileExistsError):
    """The output folder holds another run."""


class CommandLineParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose errors are `UsageError`s (one line, exit status 2 under `command_line`)."""

    def error(self, message: str):
        raise UsageError(message)


def command_line(main):
    """Make `main(argv=None)` a command: a `UsageError` prints ``<command>: error: ...`` and exits with status 2."""

    @functools.wraps(main)
    def run(argv=None):
        try:
            return main(argv)
        except UsageError as error:
            message = " ".join(str(error).split())  # one line, whatever the message's layout
            print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
            raise SystemExit(2) from None

    return run


# console command -> the module whose `main` it runs
COMMANDS = {
    "hf-vssl-pretrain": "hf_vssl.train.pretrain",
    "hf-vssl-evaluate": "hf_vssl.train.evaluate",
    "hf-vssl-finetune": "hf_vssl.train.finetune",
    "hf-vssl-prepare": "hf_vssl.data.prepare",
    "hf-vssl-demo": "hf_vssl.demo",
    "hf-vssl-hub": "hf_vssl.hub",
}


def _run(command: str) -> int:
    # Console scripts call `sys.exit(entry())`: keep an exit status, not a main's return value (results, paths).
    status = importlib.import_module(COMMANDS[command]).main()
    return status if isinstance(status, int) else 0


def pretrain() -> int:
    return _run("hf-vssl-pretrain")


def evaluate() -> int:
    return _run("hf-vssl-evaluate")


def finetune() -> int:
    return _run("hf-vssl-finetune")


def prepare() -> int:
    return _run("hf-vssl-prepare")


def demo() -> int:
    return _run("hf-vssl-demo")


def hub() -> int:
    return _run("hf-vssl-hub")
