"""The user's command line: a regular install that runs, `--help` that explains, mistakes as one `error:` line.

- the wheel, installed into a fresh virtual environment, runs the demo's console command from a folder outside the
  checkout (the configs ship as package data);
- every console command of pyproject.toml answers `--help` with every option and its help text;
- a misspelt nested key, an unknown option, a missing path or model folder: one `<command>: error: ...` line,
  exit status 2, nothing written;
- the README's commands run as written: the short ones (`--help`, `python -c`) are run, the others' options and
  configs are checked against their command's `--help`.
"""

import dataclasses
import importlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from hf_vssl import cli
from hf_vssl.methods import CONFIG_DIR, METHODS, find_config, packaged_configs
from hf_vssl.train.arguments import PretrainArguments, field_help, parse_arguments
from hf_vssl.train.evaluate import EvaluateArguments
from hf_vssl.train.finetune import FinetuneArguments

from .training_runs import PRETRAIN, REPO, TINY_MODEL

TRAINING_ARGUMENTS = {
    "hf-vssl-pretrain": PretrainArguments,
    "hf-vssl-evaluate": EvaluateArguments,
    "hf-vssl-finetune": FinetuneArguments,
}
# the demo's MLFO at the tiny size of the training tests, one epoch on 2 videos per class
TINY_DEMO = [
    "--epochs",
    "1",
    "--videos_per_class",
    "2",
    "--dataloader_num_workers",
    "0",
    *(f"--model.{key}={value}" for key, value in TINY_MODEL.items()),
    "--model.num_prototypes=4",
    "--model.logit_queue_size=8",
]


def _run_command(command: str, argv: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """Run a console command in this process, as its entry point does: (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", [command, *argv])
    entry = getattr(cli, command.removeprefix("hf-vssl-"))
    try:
        status = entry()
    except SystemExit as exit:
        status = exit.code
    out, err = capsys.readouterr()
    return status, out, err


def _one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{command}: error: "), err
    return lines[0]


# --- a regular install ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from a copy of the checkout, installed without dependencies into a fresh virtual environment
    that sees this environment's packages (torch, transformers, ...) but not the checkout's hf_vssl."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"  # building in place would leave build/ and *.egg-info in the checkout
    for name in ("hf_vssl", "model_cards"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    offline = ["--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir"]
    subprocess.run([*pip, "wheel", *offline, "-w", str(root / "dist"), str(source)], check=True, timeout=300)
    (wheel,) = (root / "dist").glob("*.whl")

    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # `--system-site-packages` would show the base interpreter's packages, not this environment's: a .pth line
    # adds this environment's site-packages as a plain path, whose own .pth files (the editable install of the
    # checkout) are not run.
    venv_site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    parent_sites = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    Path(venv_site, "parent_environment.pth").write_text("\n".join(parent_sites) + "\n")
    subprocess.run([*pip, "--python", str(python), "install", *offline, str(wheel)], check=True, timeout=300)
    return {"wheel": wheel, "venv": venv, "python": python, "site": Path(venv_site), "root": root}


def test_the_wheel_ships_the_configs_and_the_commands(installed):
    with zipfile.ZipFile(installed["wheel"]) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_text = archive.read(entry_points).decode()
    assert {f"hf_vssl/configs/{name}.yaml" for name in packaged_configs()} <= names
    assert len(packaged_configs()) >= 11 and not (REPO / "training" / "configs").exists()  # one place only
    for command in cli.COMMANDS:
        assert f"{command} = hf_vssl.cli:{command.removeprefix('hf-vssl-')}" in entry_text
        assert (installed["venv"] / "bin" / command).is_file(), command


def test_the_installed_demo_command_runs_outside_the_checkout(installed):
    user = installed["root"] / "user"  # no hf_vssl/ here and no PYTHONPATH: only the install can be imported
    user.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    where = subprocess.run(
        [
            installed["python"],
            "-c",
            "import importlib.util; print(importlib.util.find_spec('hf_vssl').origin)",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=user,
    )
    assert where.stdout.strip() == str(installed["site"] / "hf_vssl" / "__init__.py"), where
    demo = [
        installed["venv"] / "bin" / "hf-vssl-demo",
        "--data_dir",
        "data",
        "--output_dir",
        "out",
        *TINY_DEMO,
    ]
    result = subprocess.run(demo, capture_output=True, text=True, env=env, cwd=user, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    final = user / "out" / "final"
    assert {"config.json", "model.safetensors", "README.md", "run_config.yaml"} <= {
        p.name for p in final.iterdir()
    }
    assert (user / "out" / "results.json").is_file() and "Hub-ready folder: out/final" in result.stdout
    # the packaged demo config, sized down by the overrides
    assert "method: mlfo" in (final / "run_config.yaml").read_text()


# --- --help --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_help_lists_its_options_with_their_help(command, monkeypatch, capsys):
    status, out, _ = _run_command(command, ["--help"], monkeypatch, capsys)
    assert status == 0 and out.startswith("usage:"), out
    text = " ".join(out.split())
    if command in TRAINING_ARGUMENTS:
        cls = TRAINING_ARGUMENTS[command]
        docs = field_help(cls)
        undocumented = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
        assert not undocumented, (
            f"{cls.__name__} fields without an entry in its docstring's Args: {undocumented}"
        )
        for name, help_text in docs.items():
            assert f"--{name} " in text and " ".join(help_text.split()) in text, (name, out)
        assert "--config" in text and ("--model.KEY VALUE" in text or command != "hf-vssl-pretrain")
        return
    parsers = {
        "hf-vssl-prepare": lambda: [__import__("hf_vssl.data.prepare", fromlist=["x"]).build_arg_parser()],
        "hf-vssl-hub": lambda: [
            parser
            for action in __import__("hf_vssl.hub", fromlist=["x"])._build_parser()._subparsers._group_actions
            for parser in action.choices.values()
        ],
        "hf-vssl-demo": lambda: [],
    }[command]()
    for parser in parsers:
        for action in parser._actions:
            assert action.help, (command, action.option_strings or action.dest)
            if action.option_strings:  # snake_case first; a dashed spelling is only an alias
                assert "-" not in action.option_strings[-1 if action.dest == "help" else 0].lstrip("-"), (
                    action
                )
    if command == "hf-vssl-demo":
        assert all(
            option in text for option in ("--method", "--epochs", "--videos_per_class", "--output_dir")
        )
    if command == "hf-vssl-hub":
        for sub, option in (("card", "--model_id"), ("push", "--commit_message")):
            status, out, _ = _run_command(command, [sub, "--help"], monkeypatch, capsys)
            assert status == 0 and option in out, out


# --- mistakes: one error line, exit status 2, nothing written -------------------------------------------------------


def test_a_misspelt_nested_key_stops_the_run_with_a_suggestion_and_writes_nothing(
    tmp_path, monkeypatch, capsys
):
    data, out = tmp_path / "videos", tmp_path / "run"
    data.mkdir()
    base = ["--config", "mlfo_tiny_demo", "--train_dir", str(data), "--output_dir", str(out)]
    for mistake, message in (
        (
            ["--model.grap_start_epoch", "3"],
            "model.grap_start_epoch: MLFOConfig has no field 'grap_start_epoch'; did you mean 'graph_start_epoch'?",
        ),
        (
            ["--recipe.flip_prb=0.5"],
            "recipe.flip_prb: MLFOViews has no field 'flip_prb'; did you mean 'flip_prob'?",
        ),
        (["--learning_rat", "0.1"], "Unknown option --learning_rat; did you mean '--learning_rate'?"),
        (["--model.image_size", "16"], "`image_size`=16 is below the total spatial stride (32)"),
    ):
        status, _, err = _run_command("hf-vssl-pretrain", [*base, *mistake], monkeypatch, capsys)
        assert status == 2 and message in _one_error_line(err, "hf-vssl-pretrain"), err
        assert not out.exists()
    # the same checks for the YAML file's keys and the config's name
    (tmp_path / "run.yaml").write_text(
        (CONFIG_DIR / "mlfo_tiny_demo.yaml").read_text() + "learning_rat: 0.1\n"
    )
    with pytest.raises(
        ValueError, match="Unknown key 'learning_rat' in .*run.yaml; did you mean 'learning_rate'"
    ):
        parse_arguments(["--config", str(tmp_path / "run.yaml"), *base[2:]])
    with pytest.raises(FileNotFoundError, match="not a packaged config; did you mean 'mlfo_r3d18_k400'"):
        parse_arguments(["--config", "mlfo_r3d18_k40", *base[2:]])
    # a packaged config by name, with or without .yaml, or by its former path in a clone
    for name in ("mlfo_r3d18_k400", "mlfo_r3d18_k400.yaml", "training/configs/mlfo_r3d18_k400.yaml"):
        assert find_config(name) == CONFIG_DIR / "mlfo_r3d18_k400.yaml"
    assert not out.exists()


def test_a_missing_path_or_model_folder_is_one_error_line(tmp_path, monkeypatch, capsys):
    data = tmp_path / "videos"
    data.mkdir()
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    base = ["--train_dir", str(data), "--validation_dir", str(data)]
    for model in ("runs/mlfo/final", "runs/final", "./final", str(tmp_path / "nowhere"), "runs"):
        status, _, err = _run_command(
            "hf-vssl-evaluate", ["--model_name_or_path", model, *base], monkeypatch, capsys
        )
        line = _one_error_line(err, "hf-vssl-evaluate")
        expected = (
            "is not a saved model folder (no config.json)" if model == "runs" else "no such model folder"
        )
        assert status == 2 and f"--model_name_or_path {model}" in line and expected in line, err
        assert "Repo id" not in line
    status, _, err = _run_command(
        "hf-vssl-pretrain",
        ["--config", "mlfo_tiny_demo", "--train_dir", str(data), "--output_dir", "out"]
        + ["--resume_from_checkpoint", "out/checkpoints/checkpoint_9"],
        monkeypatch,
        capsys,
    )
    line = _one_error_line(err, "hf-vssl-pretrain")
    assert status == 2 and "--resume_from_checkpoint out/checkpoints/checkpoint_9 does not exist" in line
    # a Hub id is left to the Hub (nothing is fetched while parsing)
    args = parse_arguments(["--model_name_or_path", "org/mlfo-r3d18-k400", *base], EvaluateArguments)
    assert args.model_name_or_path == "org/mlfo-r3d18-k400"

    # the training script itself, as a user runs it: no traceback
    result = subprocess.run(
        [sys.executable, str(PRETRAIN), "--config", "mlfo_tiny_demo", "--train_dir", "no/such/videos"]
        + ["--output_dir", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == "pretrain.py: error: --train_dir no/such/videos does not exist."
    assert not (tmp_path / "out").exists()


# --- the README's commands -----------------------------------------------------------------------------------------

# README program -> the module whose `main` it runs (console commands, `python -m`, the clone's scripts)
PROGRAMS = {
    "training/pretrain.py": "hf_vssl.train.pretrain",
    "training/evaluate.py": "hf_vssl.train.evaluate",
    "training/finetune.py": "hf_vssl.train.finetune",
    "hf_vssl.convert_mlfo_original": "hf_vssl.convert_mlfo_original",
    "hf_vssl.evaluation.invariance": "hf_vssl.evaluation.invariance",
    **{module: module for module in cli.COMMANDS.values()},
    **cli.COMMANDS,
}
# the developer's own tools, not run here
NOT_RUN = ("make", "pip", "benchmarks/")


def readme_commands() -> list[list[str]]:
    """Every command of the README: the lines of its ```bash blocks (continuation lines joined) and the inline
    code that starts with a command, with comments and the [optional] brackets dropped."""
    text = (REPO / "README.md").read_text()
    lines = [
        line
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
        for line in block.replace("\\\n", " ").splitlines()
    ]
    lines += re.findall(
        r"`((?:python3? (?:-m [\w.]+|-c |[\w/]+\.py)|hf-vssl-[a-z]+|accelerate launch )[^`]*)`",
        re.sub(r"```.*?```", "", text, flags=re.S),
    )
    commands = []
    for line in lines:
        tokens = [token.strip("[]") for token in shlex.split(line, comments=True)]
        if tokens:
            commands.append(tokens)
    return commands


def _module_of(tokens: list[str]) -> tuple[str | None, list[str]]:
    """(module whose main runs, its arguments) of a README command; (None, tokens) for others."""
    if tokens[:2] == ["accelerate", "launch"]:
        tokens = ["python", *tokens[2:]]
    if tokens[0] in ("python", "python3"):
        if tokens[1] == "-c":
            return None, tokens
        program, argv = (tokens[2], tokens[3:]) if tokens[1] == "-m" else (tokens[1], tokens[2:])
    else:
        program, argv = tokens[0], tokens[1:]
    return PROGRAMS.get(program), argv


def _help_of(module: str, argv: list[str], monkeypatch, capsys) -> str:
    monkeypatch.setattr(sys, "argv", [module, *argv, "--help"])
    with pytest.raises(SystemExit) as exit:
        importlib.import_module(module).main([*argv, "--help"])
    out, err = capsys.readouterr()
    assert exit.value.code == 0 and out.startswith("usage:"), (module, argv, err)
    return out


def test_the_readme_commands_run_as_written(monkeypatch, capsys):
    helps, snippets, checked = {}, [], 0
    for tokens in readme_commands():
        module, argv = _module_of(tokens)
        if module is None:
            if tokens[1:2] == ["-c"]:
                snippets.append(tokens[2])
            else:
                program = " ".join(tokens[:2])
                assert any(word in program for word in NOT_RUN), (
                    f"README runs {program!r}: teach this test about it"
                )
            continue
        key = (module, *argv[:1]) if module == "hf_vssl.hub" else (module,)
        if key not in helps:  # a `--help` command runs here
            helps[key] = _help_of(module, list(key[1:]), monkeypatch, capsys)
            if module == "hf_vssl.demo":  # the demo passes the options it does not know to pretraining
                helps[key] += _help_of("hf_vssl.train.pretrain", [], monkeypatch, capsys)
        for option in (token.partition("=")[0] for token in argv if token.startswith("--")):
            known = option.split(".")[0] if option.startswith(("--model.", "--recipe.")) else option
            assert re.search(rf"{re.escape(known)}\b", helps[key]), (option, " ".join(tokens))
        if "--config" in argv and module != "hf_vssl.hub":
            find_config(argv[argv.index("--config") + 1])
        method = argv[argv.index("--method") + 1] if "--method" in argv else None
        if method in METHODS:  # nested keys are fields of that method's config or recipe
            nested = [
                token[2:].partition("=")[0].split(".")
                for token in argv
                if token.startswith(("--model.", "--recipe."))
            ]
            for kind, key in nested:
                METHODS[method].check_keys(**{kind: {key: None}})
        checked += 1
    assert checked >= 10 and len(helps) >= 7 and len(snippets) >= 2
    # the snippets need no data and import only hf_vssl: each runs here, in a fresh namespace
    for code in snippets:
        exec(compile(code, "<README>", "exec"), {})
    assert "mlfo_r3d18_k400" in capsys.readouterr().out
