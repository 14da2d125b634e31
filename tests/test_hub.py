"""Model cards and Hub publishing: cards rendered from saved encoders, pushed with the real client to a loopback
fake Hub, and loaded back from it with `from_pretrained(repo_id)`, with and without hf_vssl installed."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
import torch
import transformers
import yaml
from huggingface_hub import ModelCard

import hf_vssl
from hf_vssl.evaluation.results import EvalRecord, EvalResults
from hf_vssl.hub import main, push_folder, render_model_card, write_model_card

from .conftest import TINY_BACKBONE, run_without_hf_vssl, tiny_config
from .fake_hub import check_card_metadata, fake_hub_fixture, run_python, split_front_matter  # noqa: F401

METHODS = sorted(hf_vssl.METHODS)
ROOT = Path(__file__).resolve().parent.parent
# Fractions as the protocols compute them; cards show percentages to one decimal.
RESULTS = EvalResults.from_metrics(
    {
        "linear_probe/top1": 47 / 96,  # 48.958...% -> 49.0
        "linear_probe/top5": 0.9,
        "knn/top1": 0.55,
        "retrieval/R@1": 1 / 3,
        "retrieval/R@5": 0.71,
    },
    dataset="hf-vssl/synthetic-motion",
    split="test",
    measured_with="5 clips x center crop",
)
# A run_config.yaml as the training scripts write it (PretrainArguments), plus a secret a user might add.
TRAIN_CONFIG = {
    "method": "mlfo",
    "model": {"num_frames": 8, "image_size": 32},
    "train_dir": "data/synthetic",
    "num_train_epochs": 3,
    "max_steps": -1,
    "per_device_train_batch_size": 4,
    "optimizer": "adam",
    "learning_rate": 0.001,
    "mixed_precision": "no",
    "report_to": {"wandb_api_key": "hf_secret_value"},
}


def _save_encoder(method, folder, seed=0):
    torch.manual_seed(seed)
    model = hf_vssl.METHODS[method].model(tiny_config(method)).eval()
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def saved_encoders(tmp_path_factory):
    """One tiny saved encoder folder per method (save_pretrained output, with remote code)."""
    root = tmp_path_factory.mktemp("encoders")
    for method in METHODS:
        _save_encoder(method, root / method)
    return root


def _card_yaml(content: str) -> dict:
    yaml_text, _ = split_front_matter(content)
    return yaml.safe_load(yaml_text)


# --- model cards --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_card_fills_every_placeholder_from_the_saved_model(method, saved_encoders):
    card = render_model_card(
        None,
        saved_encoders / method,
        model_id="org/tiny-" + method,
        train_config=TRAIN_CONFIG,
        eval_results=RESULTS,
    )
    text = card.text
    assert "{{" not in card.content and "}}" not in card.content
    assert f'AutoModel.from_pretrained("org/tiny-{method}", trust_remote_code=True)' in text
    assert "import hf_vssl" in text and f"hf_vssl.{hf_vssl.METHODS[method].model.__name__}" in text
    assert "torch.randn(2, 8, 3, 32, 32)" in text  # the snippet uses the config's clip size
    assert "pooler_output  # [2, 64]" in text  # and the last stage width
    assert "| Stage widths | [8, 16, 32, 64] |" in text
    # Parameters only: the weights file also holds BatchNorm statistics.
    params = sum(p.numel() for p in hf_vssl.METHODS[method].model(tiny_config(method)).parameters())
    assert f"| Parameters | {params:,} |" in text
    meta = card.data.to_dict()
    assert meta["library_name"] == "transformers"
    assert {"video", "self-supervised", "custom_code", method} <= set(meta["tags"])
    assert meta["license"] == "apache-2.0"


def test_reconstructed_methods_say_so_and_mlfo_follows_the_code(saved_encoders):
    cards = {m: render_model_card(m, saved_encoders / m, model_id=f"org/{m}").text for m in METHODS}
    for method in ("ctrlaug", "hdc"):
        assert "This is a reconstruction, not the authors' method." in cards[method]
        assert cards[method].count("[ours]") >= 4
        assert "What the abstract claims, and hf_vssl realises" in cards[method]
    assert "follows the authors' public code" in cards["mlfo"]
    assert "[ours]" not in cards["mlfo"]
    assert '"ctrlaug" is hf_vssl\'s identifier for this method' in cards["ctrlaug"]
    for method, arxiv in (("mlfo", "2108.02183"), ("ctrlaug", "2203.16632"), ("hdc", "2011.11261")):
        assert f"arXiv:{arxiv}" in cards[method]


def test_measured_results_go_to_model_index_and_body_and_round_trip(saved_encoders, tmp_path):
    folder = tmp_path / "mlfo"
    _save_encoder("mlfo", folder)
    readme = write_model_card(
        folder, model_id="org/mlfo-tiny", train_config=TRAIN_CONFIG, eval_results=RESULTS
    )
    content = readme.read_text()

    loaded = ModelCard.load(readme)
    assert (
        loaded.data.to_dict()
        == render_model_card(
            "mlfo", folder, model_id="org/mlfo-tiny", train_config=TRAIN_CONFIG, eval_results=RESULTS
        ).data.to_dict()
    )
    got = {
        (r.metric_name, r.metric_type, r.metric_value, r.dataset_type, r.dataset_split)
        for r in loaded.data.eval_results
    }
    assert got == {
        ("Linear probe top-1 accuracy", "accuracy", 49.0, "hf-vssl/synthetic-motion", "test"),
        ("Linear probe top-5 accuracy", "accuracy", 90.0, "hf-vssl/synthetic-motion", "test"),
        ("kNN top-1 accuracy", "accuracy", 55.0, "hf-vssl/synthetic-motion", "test"),
        ("Retrieval Recall@1", "recall", 33.3, "hf-vssl/synthetic-motion", "test"),
        ("Retrieval Recall@5", "recall", 71.0, "hf-vssl/synthetic-motion", "test"),
    }
    assert loaded.data.model_name == "mlfo-tiny"
    assert sorted(loaded.data.metrics) == ["accuracy", "recall"]
    assert _card_yaml(content)["model-index"][0]["name"] == "mlfo-tiny"
    row = "| Linear probe | hf-vssl/synthetic-motion | test | top-1 accuracy | 49.0 | 5 clips x center crop |"
    assert row in content
    assert (
        "| Retrieval | hf-vssl/synthetic-motion | test | Recall@1 | 33.3 | 5 clips x center crop |" in content
    )
    assert "48.95" not in content and "33.33" not in content
    assert "Not evaluated" not in content
    assert check_card_metadata(content) == ([], [])


def test_unevaluated_card_says_so_and_quotes_paper_numbers_only_as_the_papers(saved_encoders):
    for method in METHODS:
        card = render_model_card(method, saved_encoders / method, model_id=f"org/{method}")
        assert "**Not evaluated.**" in card.text
        meta = _card_yaml(card.content)
        assert "model-index" not in meta and "metrics" not in meta
        assert check_card_metadata(card.content) == ([], [])
    hdc = render_model_card("hdc", saved_encoders / "hdc", model_id="org/hdc").text
    comparison = hdc.split("## Comparison with the paper", 1)[1]
    assert "**the paper's, not ours**" in comparison
    assert "| R(2+1)D | 76.2 | 39.8 |" in comparison and "| R3D | 68.5 | 38.1 |" in comparison
    assert "76.2" not in hdc.split("## Comparison with the paper", 1)[0]
    for method in ("mlfo", "ctrlaug"):
        text = render_model_card(method, saved_encoders / method, model_id="org/x").text
        assert "76.2" not in text and "No " in text.split("## Comparison with the paper", 1)[1][:40]


def test_classifier_folder_gets_the_video_classification_pipeline_tag(saved_encoders, tmp_path):
    config = tiny_config("hdc", num_labels=3)
    hf_vssl.HDCForVideoClassification(config).save_pretrained(tmp_path / "clf")
    card = render_model_card(None, tmp_path / "clf", model_id="org/hdc-ucf", base_model="org/hdc-k400")
    meta = card.data.to_dict()
    assert meta["pipeline_tag"] == "video-classification" and meta["base_model"] == "org/hdc-k400"
    assert "**This checkpoint is a video classifier** (`HDCForVideoClassification`, 3 classes)" in card.text
    assert "video classifier" not in render_model_card("hdc", saved_encoders / "hdc", model_id="o/m").text
    encoder = render_model_card(None, tmp_path / "clf", model_id="o/m", pipeline_tag="feature-extraction")
    assert encoder.data.pipeline_tag == "feature-extraction"


@pytest.mark.parametrize("method", METHODS)
def test_classifier_card_loading_snippets_name_the_class_each_auto_class_returns(
    method, saved_encoders, tmp_path
):
    classifier = hf_vssl.METHODS[method].classifier(tiny_config(method, num_labels=3))
    classifier.save_pretrained(tmp_path / "clf")
    text = render_model_card(None, tmp_path / "clf", model_id="org/clf").text
    snippets = re.findall(r'= (AutoModel\w*)\.from_pretrained\("org/clf"\)  # an hf_vssl\.(\w+)', text)
    assert {auto for auto, _ in snippets} == {"AutoModel", "AutoModelForVideoClassification"}
    for auto, class_name in snippets:
        assert type(getattr(transformers, auto).from_pretrained(tmp_path / "clf")).__name__ == class_name
    assert f"| Parameters | {sum(p.numel() for p in classifier.parameters()):,} |" in text
    encoder_card = render_model_card(None, saved_encoders / method, model_id="org/enc").text
    assert "AutoModelForVideoClassification" not in encoder_card


def test_training_section_summarises_the_resolved_config_and_redacts_secrets(saved_encoders):
    text = render_model_card("mlfo", saved_encoders / "mlfo", model_id="o/m", train_config=TRAIN_CONFIG).text
    summary = text.split("<details>")[0]
    assert "| `learning_rate` | 0.001 |" in summary
    assert "| `num_train_epochs` | 3 |" in summary
    assert "| `train_dir` | data/synthetic |" in summary
    assert "max_steps" not in summary  # unset
    assert "hf_secret_value" not in text and "wandb_api_key: <redacted>" in text
    bare = render_model_card(
        "mlfo", saved_encoders / "mlfo", model_id="o/m", dataset_name="org/k400-mini"
    ).text
    assert "No training configuration was given" in bare and "`org/k400-mini`" in bare


def test_fine_tuning_results_say_how_they_were_measured(saved_encoders):
    record = EvalRecord("finetune", "top1", 0.805, "ucf101", "validation", "10 clips x three crops")
    card = render_model_card(
        "mlfo", saved_encoders / "mlfo", model_id="o/m", eval_results=EvalResults([record])
    )
    (result,) = card.data.eval_results
    assert (result.metric_type, result.metric_name, result.metric_value) == (
        "accuracy",
        "Fine-tuning top-1 accuracy",
        80.5,
    )
    assert card.data.metrics == ["accuracy"]
    assert (
        "| Fine-tuning | ucf101 | validation | top-1 accuracy | 80.5 | 10 clips x three crops |" in card.text
    )


def test_card_errors_name_the_folder_and_the_mismatch(saved_encoders, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        render_model_card("mlfo", tmp_path / "missing", model_id="o/m")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        render_model_card("mlfo", tmp_path / "empty", model_id="o/m")
    with pytest.raises(ValueError, match="model_type 'mlfo'"):
        render_model_card("hdc", saved_encoders / "mlfo", model_id="o/m")
    with pytest.raises(ValueError, match="unknown method"):
        render_model_card("simclr", saved_encoders / "mlfo", model_id="o/m")


def test_cli_card_writes_readme_from_config_and_results_files(saved_encoders, tmp_path, capsys):
    folder = tmp_path / "hdc"
    _save_encoder("hdc", folder)
    (tmp_path / "run_config.yaml").write_text(yaml.safe_dump(TRAIN_CONFIG))
    linear = EvalResults.from_metrics({"linear_probe/top1": 0.125}, dataset="ucf101", split="test")
    knn = EvalResults.from_metrics({"knn/top1": 0.1}, dataset="ucf101", split="test")
    files = [str(linear.save(tmp_path / "linear.json")), str(knn.save(tmp_path / "knn.json"))]
    argv = ["card", str(folder), "--model-id", "org/hdc-tiny", "--config", str(tmp_path / "run_config.yaml")]
    assert main([*argv, "--results", *files]) == 0
    assert capsys.readouterr().out.strip() == str(folder / "README.md")
    card = ModelCard.load(folder / "README.md")
    assert {(r.metric_name, r.metric_value) for r in card.data.eval_results} == {
        ("Linear probe top-1 accuracy", 12.5),
        ("kNN top-1 accuracy", 10.0),
    }
    assert 'from_pretrained("org/hdc-tiny", trust_remote_code=True)' in card.text
    assert check_card_metadata(card.content) == ([], [])

    assert main(["card", str(folder), "--results", files[1], files[1]]) == 2  # the same number twice
    assert "is given twice" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text(knn.to_json().replace("0.1", '"n/a"'))
    assert main(["card", str(folder), "--results", str(tmp_path / "bad.json")]) == 2
    assert "bad.json: results[0]" in capsys.readouterr().err
    assert main(["card", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_push_refuses_folders_that_cannot_be_loaded(saved_encoders, tmp_path, capsys):
    # All of these fail before any network call.
    assert main(["push", str(tmp_path / "nowhere"), "org/x"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["push", str(tmp_path / "empty"), "org/x"]) == 2
    assert "has no config.json" in capsys.readouterr().err
    folder = tmp_path / "no_weights"
    folder.mkdir()
    (folder / "config.json").write_text((saved_encoders / "mlfo" / "config.json").read_text())
    assert main(["push", str(folder), "org/x"]) == 2
    assert "no model weights" in capsys.readouterr().err
    (folder / "model.safetensors").write_bytes((saved_encoders / "mlfo" / "model.safetensors").read_bytes())
    (folder / "configuration_mlfo.py").write_text(
        (saved_encoders / "mlfo" / "configuration_mlfo.py").read_text()
    )
    with pytest.raises(FileNotFoundError, match="modeling_mlfo.MLFOModel, but modeling_mlfo.py is not in"):
        push_folder(folder, "org/x")


def test_wheel_ships_the_card_templates_and_an_install_writes_cards(tmp_path):
    pytest.importorskip("setuptools")
    # Built from a copy of the project: building in place would leave build/ and *.egg-info in the checkout.
    source = tmp_path / "source"
    for name in ("hf_vssl", "model_cards"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--no-cache-dir",
        ]
        + ["--disable-pip-version-check", "-q", "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(site)
    assert {f"hf_vssl/model_cards/{method}.md" for method in METHODS} <= names
    assert "hf_vssl/model_cards/example_clip.mp4" in names  # the widget's example
    # pyproject.toml lists the packages: a new sub-package that is not listed there is missing here.
    assert {p.relative_to(source).as_posix() for p in (source / "hf_vssl").rglob("*.py")} <= names

    # The installed package, without the checkout next to it, writes a card as pretraining does at its end.
    code = f"""
        import hf_vssl
        from hf_vssl.hub import write_model_card
        assert hf_vssl.__file__.startswith({str(site)!r}), hf_vssl.__file__
        hf_vssl.MLFOModel(hf_vssl.MLFOConfig(**{TINY_BACKBONE!r})).save_pretrained("encoder")
        text = write_model_card("encoder", model_id="org/mlfo").read_text()
        assert "pretrained with **MLFO**" in text and "{{{{" not in text, text
        assert "resolve/main/example_clip.mp4" in text, text
        """
    run_python(textwrap.dedent(code), env={**os.environ, "PYTHONPATH": str(site)}, cwd=tmp_path)


# --- the fake Hub's card validation -------------------------------------------------------------------------------


def _post_json(url, payload):
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_fake_hub_validate_yaml_accepts_our_cards_and_rejects_broken_ones(fake_hub, saved_encoders, tmp_path):
    good = render_model_card("mlfo", saved_encoders / "mlfo", model_id="o/m", eval_results=RESULTS).content
    url = f"{fake_hub.endpoint}/api/validate-yaml"
    assert _post_json(url, {"content": good, "repoType": "model"}) == (200, {"errors": [], "warnings": []})
    status, body = _post_json(url, {"content": "---\ntags: [video\n---\n# x\n", "repoType": "model"})
    assert status == 400 and "Invalid YAML" in body["errors"][0]["message"]
    broken_index = good.replace("type: video-classification", "kind: video-classification")
    status, body = _post_json(url, {"content": broken_index, "repoType": "model"})
    assert status == 400 and "task.type" in body["errors"][0]["message"]

    # The real client's ModelCard.validate() against the fake (HF_ENDPOINT is read at import: a subprocess). The
    # client parses model-index itself, so its invalid card is one that only the server rejects.
    (tmp_path / "good.md").write_text(good)
    (tmp_path / "bad.md").write_text(
        good.replace("library_name: transformers", "library_name: [transformers]")
    )
    run_python(
        textwrap.dedent(
            f"""
            from huggingface_hub import ModelCard
            ModelCard.load({str(tmp_path / "good.md")!r}).validate()
            try:
                ModelCard.load({str(tmp_path / "bad.md")!r}).validate()
            except ValueError as exc:
                assert "library_name" in str(exc), exc
            else:
                raise SystemExit("an invalid model-index was accepted")
            """
        ),
        env=fake_hub.env(tmp_path / "hf_home"),
    )
    assert len(fake_hub.calls("POST", "/api/validate-yaml")) == 5


# --- push and load round trip -------------------------------------------------------------------------------------


def test_push_then_load_from_the_hub_without_hf_vssl_gives_the_same_outputs(fake_hub, tmp_path):
    repo_id = "fake-user/mlfo-tiny"
    folder = tmp_path / "mlfo-tiny"
    model = _save_encoder("mlfo", folder, seed=3)
    write_model_card(folder, model_id=repo_id, train_config=TRAIN_CONFIG, eval_results=RESULTS)
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "modeling_mlfo.cpython-311.pyc").write_bytes(b"\0stale")
    clip = torch.randn(2, 8, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        out = model(pixel_values=clip, output_hidden_states=True)
    torch.save(
        {"clip": clip, "pooled": out.pooler_output, "last": out.last_hidden_state}, tmp_path / "ref.pt"
    )
    env = fake_hub.env(tmp_path / "hf_home")

    # 1. Push with the CLI (the real huggingface_hub client, in a process that imported it with HF_ENDPOINT set).
    push = subprocess.run(
        [sys.executable, "-m", "hf_vssl.hub", "push", str(folder), repo_id, "--commit-message", "tiny MLFO"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert push.returncode == 0, push.stderr
    repo = fake_hub.repo(repo_id)
    head = repo.history()[0]
    assert push.stdout.strip() == f"{fake_hub.endpoint}/{repo_id}/commit/{head.oid}"
    assert head.title == "tiny MLFO"
    files = repo.files()
    expected = {".gitattributes", "README.md", "config.json", "model.safetensors", "modeling_mlfo.py"}
    assert expected <= set(files)
    assert {p for p in files if p.endswith(".py")} == {p.name for p in folder.glob("*.py")}
    assert not any("__pycache__" in p for p in files)
    assert files["model.safetensors"].lfs and not files["config.json"].lfs
    assert files["model.safetensors"].content == (folder / "model.safetensors").read_bytes()
    for call in (
        "/api/repos/create",
        "/api/validate-yaml",
        "/preupload/main",
        "/info/lfs/objects/batch",
        "/commit/main",
    ):
        assert fake_hub.calls("POST", call), call
    assert fake_hub.calls("PUT", "/__lfs/") and fake_hub.calls("POST", "/verify")

    # The pushed README carries the measured results in its YAML.
    pushed_card = ModelCard(files["README.md"].content.decode())
    assert {(r.metric_name, r.metric_value) for r in pushed_card.data.eval_results} >= {
        ("Linear probe top-1 accuracy", 49.0),
        ("Retrieval Recall@5", 71.0),
    }

    # 2. Load by repo id in a fresh process in which hf_vssl cannot be imported: remote code only.
    (tmp_path / "empty_cwd").mkdir()
    loaded = run_without_hf_vssl(
        f"""
        import sys, torch
        from transformers import AutoModel
        model = AutoModel.from_pretrained({repo_id!r}, trust_remote_code=True, dtype=torch.float32)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert type(model).__name__ == "MLFOModel" and not model.training
        assert not any(name == "hf_vssl" or name.startswith("hf_vssl.") for name in sys.modules)
        ref = torch.load({str(tmp_path / "ref.pt")!r}, weights_only=True)
        with torch.no_grad():
            out = model(pixel_values=ref["clip"])
        torch.testing.assert_close(out.pooler_output, ref["pooled"], rtol=0, atol=1e-6)
        torch.testing.assert_close(out.last_hidden_state, ref["last"], rtol=0, atol=1e-6)
        print("loaded", tuple(out.pooler_output.shape))
        """,
        cwd=tmp_path / "empty_cwd",
        env=env,
    )
    assert "loaded (2, 64)" in loaded.stdout
    # transformers resolves "main" to the commit once, then downloads every file at that commit.
    assert fake_hub.calls("GET", f"/{repo_id}/resolve/{head.oid}/model.safetensors")
    assert fake_hub.calls("GET", f"/{repo_id}/resolve/{head.oid}/modeling_mlfo.py")
    assert not fake_hub.unhandled, fake_hub.unhandled

    # 3. Load by repo id with hf_vssl imported: the installed classes, no remote code.
    run_python(
        textwrap.dedent(
            f"""
            import torch, hf_vssl
            from transformers import AutoModel
            model = AutoModel.from_pretrained({repo_id!r}, dtype=torch.float32)
            assert type(model) is hf_vssl.MLFOModel, type(model)
            ref = torch.load({str(tmp_path / "ref.pt")!r}, weights_only=True)
            with torch.no_grad():
                out = model(pixel_values=ref["clip"])
            torch.testing.assert_close(out.pooler_output, ref["pooled"], rtol=0, atol=1e-6)
            """
        ),
        env=env,
        cwd=tmp_path / "empty_cwd",
    )
    assert not fake_hub.unhandled, fake_hub.unhandled


def test_push_folder_to_a_branch_of_a_private_repo_and_unchanged_push_adds_no_commit(fake_hub, tmp_path):
    folder = tmp_path / "ctrlaug"
    _save_encoder("ctrlaug", folder)
    write_model_card(folder, model_id="someone/else")  # rendered for another repo: the push warns
    code = textwrap.dedent(
        f"""
        import logging
        logging.basicConfig(level=logging.WARNING)
        from hf_vssl.hub import push_folder
        first = push_folder({str(folder)!r}, "ctrl-tiny", private=True, revision="dev", commit_message="first")
        again = push_folder({str(folder)!r}, "fake-user/ctrl-tiny", revision="dev")
        print("OIDS", first.oid, again.oid)
        """
    )
    proc = run_python(code, env=fake_hub.env(tmp_path / "hf_home"))
    first_oid, again_oid = proc.stdout.split("OIDS", 1)[1].split()
    repo = fake_hub.repo("fake-user/ctrl-tiny")  # the namespace came from the token's user
    assert repo.private
    assert repo.branches["dev"] == first_oid == again_oid  # nothing changed: no second commit
    assert "README.md" in repo.files("dev") and "README.md" not in repo.files("main")
    assert "rendered for someone/else but is pushed to fake-user/ctrl-tiny" in proc.stderr


# --- the fake Hub's download side ---------------------------------------------------------------------------------


def test_fake_hub_download_errors_match_the_real_hub(fake_hub, tmp_path):
    repo = fake_hub.create_repo("fake-user/files")
    fake_hub.commit("fake-user/files", {"a.txt": b"hi"})
    fake_hub.create_repo("fake-user/secret", private=True)
    env = fake_hub.env(tmp_path / "hf_home")
    code = textwrap.dedent(
        f"""
        from huggingface_hub import hf_hub_download, snapshot_download, HfApi
        from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
        sha = HfApi().model_info("fake-user/files").sha
        assert sha == {repo.branches["main"]!r}
        assert open(hf_hub_download("fake-user/files", "a.txt", revision=sha)).read() == "hi"
        for call, error in [
            (lambda: hf_hub_download("fake-user/files", "missing.txt"), EntryNotFoundError),
            (lambda: hf_hub_download("fake-user/nope", "a.txt"), RepositoryNotFoundError),
            (lambda: hf_hub_download("fake-user/files", "a.txt", revision="nope"), RevisionNotFoundError),
            (lambda: hf_hub_download("fake-user/secret", ".gitattributes", token=False), RepositoryNotFoundError),
        ]:
            try:
                call()
            except error:
                pass
            else:
                raise SystemExit(f"expected {{error.__name__}}")
        print(sorted(__import__("os").listdir(snapshot_download("fake-user/files"))))
        """
    )
    assert run_python(code, env=env).stdout.strip() == "['.gitattributes', 'a.txt']"


# --- what the Hub uses: dataset names, base model, pipeline tag, widget (issue 16) ---------------------------------


def test_card_names_datasets_by_hub_id_or_clean_name_never_a_local_path(tmp_path):
    from hf_vssl.hub import card_dataset_name, hub_model_id_of

    assert card_dataset_name("hf://datasets/org/k400-mini@main/train/*.tar") == "org/k400-mini"
    assert card_dataset_name("org/k400-mini") == "org/k400-mini"  # a Hub id (no such local folder)
    assert card_dataset_name(".cache/demo-data/train") == "demo-data"
    assert card_dataset_name("/data/ucf101/test") == "ucf101"
    assert card_dataset_name("data/k400/shards/train-{0..7}.tar") == "k400"
    assert card_dataset_name("hf_vssl synthetic motion") == "hf_vssl synthetic motion"
    (tmp_path / "ucf101" / "train").mkdir(parents=True)
    assert card_dataset_name(str(tmp_path / "ucf101" / "train")) == "ucf101"
    # base models: a Hub id, or a local folder that was pushed (its run config says where to)
    assert hub_model_id_of("org/encoder") == "org/encoder"
    pushed = tmp_path / "pushed"
    pushed.mkdir()
    assert hub_model_id_of(pushed) is None
    (pushed / "run_config.yaml").write_text(yaml.safe_dump({"push_to_hub": True, "hub_model_id": "org/enc"}))
    assert hub_model_id_of(pushed) == "org/enc"


def test_encoder_card_has_feature_pipeline_tag_measured_widget_and_rounded_metrics(tmp_path):
    from huggingface_hub import EvalResult, ModelCardData
    from transformers import pipeline

    from hf_vssl.train.release import save_processors

    folder = tmp_path / "encoder"
    encoder = _save_encoder("mlfo", folder)
    save_processors(encoder.config, folder, num_clips=2)
    # a results file as training/evaluate.py writes it for a local validation folder, rendered by the CLI
    results = EvalResults.from_metrics(
        {"knn/top1": 3 / 8}, dataset=".cache/demo-data/validation", split="validation"
    )
    assert main(["card", str(folder), "--results", str(results.save(tmp_path / "results.json"))]) == 0
    card = ModelCard.load(folder / "README.md")
    assert (card.data.pipeline_tag, card.data.eval_results[0].metric_value) == ("feature-extraction", 37.5)
    write_model_card(folder, dataset_name=".cache/demo-data/train", eval_results=results)
    card = ModelCard.load(folder / "README.md")
    data = ModelCardData(**card.data.to_dict())
    assert data.pipeline_tag == "feature-extraction" and data.datasets == ["demo-data"]
    (result,) = data.eval_results
    assert isinstance(result, EvalResult)
    assert (result.metric_value, result.dataset_type, result.dataset_name) == (37.5, "demo-data", "demo-data")
    assert ".cache" not in yaml.safe_dump(card.data.to_dict())
    assert "Self-supervised features, not a classifier" in card.text.split("## Limitations", 1)[1]
    # the widget shows the embedding pipeline("video-feature-extraction") gives for the shipped example clip
    (widget,) = data.widget
    assert widget["src"] == "example_clip.mp4"  # rendered for the folder's name, not a Hub id
    embedding = pipeline("video-feature-extraction", model=str(folder))(str(folder / "example_clip.mp4"))
    first = ", ".join(f"{v:.4f}" for v in embedding[:4])
    assert (
        widget["output"]["text"].startswith(f"{len(embedding)}-d embedding")
        and f"[{first}, ...]" in (widget["output"]["text"])
    )
    assert check_card_metadata(card.content) == ([], [])
