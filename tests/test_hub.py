"""Model cards and Hub publishing: cards rendered from saved encoders, pushed with the real client to a loopback
fake Hub, and loaded back from it with `from_pretrained(repo_id)`, with and without hf_vssl installed."""

import json
import math
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
from hf_vssl.evaluation.runner import write_results
from hf_vssl.hub import (
    load_eval_results,
    main,
    parse_eval_results,
    push_folder,
    render_model_card,
    write_model_card,
)

from .conftest import TINY_BACKBONE, run_without_hf_vssl, tiny_config
from .fake_hub import check_card_metadata, fake_hub_fixture, run_python, split_front_matter  # noqa: F401

METHODS = sorted(hf_vssl.METHODS)
ROOT = Path(__file__).resolve().parent.parent
RESULTS = {
    "dataset": "hf-vssl/synthetic-motion",
    "dataset_name": "Synthetic motion",
    "split": "test",
    "linear_probe": {"top1": 61.5, "top5": 93.25},
    "knn": {"top1": 55.0},
    "retrieval": {"R@1": 40.125, "R@5": 71.0},
}
TRAIN_CONFIG = {
    "method": "mlfo",
    "data": {"source": "synthetic", "num_frames": 8, "image_size": 32},
    "optimizer": {"name": "adam", "lr": 0.001, "weight_decay": 1e-5},
    "num_epochs": 3,
    "per_device_batch_size": 4,
    "mixed_precision": "no",
    "hub": {"token": "hf_secret_value"},
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
        ("Linear probe top-1 accuracy", "accuracy", 61.5, "hf-vssl/synthetic-motion", "test"),
        ("Linear probe top-5 accuracy", "accuracy", 93.25, "hf-vssl/synthetic-motion", "test"),
        ("kNN top-1 accuracy", "accuracy", 55.0, "hf-vssl/synthetic-motion", "test"),
        ("Retrieval Recall@1", "recall", 40.125, "hf-vssl/synthetic-motion", "test"),
        ("Retrieval Recall@5", "recall", 71.0, "hf-vssl/synthetic-motion", "test"),
    }
    assert loaded.data.model_name == "mlfo-tiny"
    assert sorted(loaded.data.metrics) == ["accuracy", "recall"]
    assert _card_yaml(content)["model-index"][0]["name"] == "mlfo-tiny"
    assert "| Linear probe | Synthetic motion | test | top-1 accuracy | 61.5 |" in content
    assert "| Retrieval | Synthetic motion | test | Recall@1 | 40.125 |" in content
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
    assert "| Learning rate | `optimizer.lr` | 0.001 |" in text
    assert "| Epochs | `num_epochs` | 3 |" in text
    assert "| Training data | `data.source` | synthetic |" in text
    assert "hf_secret_value" not in text and "token: <redacted>" in text
    bare = render_model_card(
        "mlfo", saved_encoders / "mlfo", model_id="o/m", dataset_name="org/k400-mini"
    ).text
    assert "No training configuration was given" in bare and "`org/k400-mini`" in bare


def test_results_in_record_form_equal_nested_form(tmp_path):
    records = {
        "dataset": "d",
        "results": [
            {"protocol": "linear_probe", "metric": "top1", "value": 1.5, "split": "test"},
            {"protocol": "retrieval", "metric": "R@1", "value": 2, "split": "test"},
        ],
    }
    nested = {"dataset": "d", "split": "test", "linear_probe": {"top1": 1.5}, "retrieval": {"R@1": 2}}
    assert parse_eval_results(records) == parse_eval_results(nested)
    several = parse_eval_results([records, {"dataset": "e", "knn": {"top1": 3.0}}])
    assert [r.dataset for r in several] == ["d", "d", "e"]
    bare = [{**rec, "dataset": "d"} for rec in records["results"]]
    assert parse_eval_results(bare) == parse_eval_results(records)
    (tmp_path / "bare.json").write_text(json.dumps(bare))
    (tmp_path / "nested.json").write_text(json.dumps({**nested, "dataset": "e"}))
    from_files = parse_eval_results(load_eval_results([tmp_path / "bare.json", tmp_path / "nested.json"]))
    assert from_files[:2] == parse_eval_results(records)
    assert [(r.dataset, r.metric) for r in from_files[2:]] == [("e", "top1"), ("e", "R@1")]
    with pytest.raises(ValueError, match="given twice"):  # the same number from two files
        parse_eval_results(load_eval_results([tmp_path / "bare.json", tmp_path / "bare.json"]))


def test_card_takes_the_results_file_that_evaluation_writes(tmp_path, capsys):
    results = tmp_path / "results.json"
    write_results(
        {
            "pretrained": {"knn/top1": 0.41, "retrieval/R@1": 0.33},
            "random init": {"knn/top1": 0.12, "retrieval/R@1": 0.05},
        },
        results,
        dataset="data/validation",
        split="validation",
    )
    folder = tmp_path / "mlfo"
    _save_encoder("mlfo", folder)
    argv = ["card", str(folder), "--model-id", "org/mlfo", "--results", str(results)]
    for extra, expected in (([], (41.0, 33.0)), (["--variant", "random init"], (12.0, 5.0))):
        assert main([*argv, *extra]) == 0
        card = ModelCard.load(folder / "README.md")
        assert {
            (r.metric_name, r.metric_value, r.dataset_type, r.dataset_split) for r in card.data.eval_results
        } == {
            ("kNN top-1 accuracy", expected[0], "data/validation", "validation"),
            ("Retrieval Recall@1", expected[1], "data/validation", "validation"),
        }
        assert check_card_metadata(card.content) == ([], [])
    capsys.readouterr()
    assert main([*argv, "--variant", "supervised"]) == 2
    assert "('pretrained', 'random init') and none for 'supervised'" in capsys.readouterr().err
    # In Python, the loaded file as it is gives the card's default variant.
    assert parse_eval_results(json.loads(results.read_text())) == parse_eval_results(
        load_eval_results(results)
    )


@pytest.mark.parametrize(
    "metric, metric_type, metric_name",
    [
        ("top1 (5 clips x ten crops)", "accuracy", "top-1 accuracy (5 clips x ten crops)"),
        ("R@5 (center crop)", "recall", "Recall@5 (center crop)"),
        ("mAP (3 clips)", "mAP", "mAP (3 clips)"),
    ],
)
def test_qualified_metric_keeps_the_standard_type_and_the_qualifier_in_its_name(
    metric, metric_type, metric_name, saved_encoders
):
    # The shape fine-tuning writes: {"finetune": {"top1 (5 clips x ten crops)": ...}}.
    results = {"dataset": "ucf101", "split": "validation", "finetune": {metric: 80.5}}
    card = render_model_card("mlfo", saved_encoders / "mlfo", model_id="o/m", eval_results=results)
    (result,) = card.data.eval_results
    assert (result.metric_type, result.metric_name) == (metric_type, f"Fine-tuning {metric_name}")
    assert card.data.metrics == [metric_type]
    assert f"| Fine-tuning | ucf101 | validation | {metric_name} | 80.5 |" in card.text


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"dataset": "d", "knn": {"top1": math.nan}}, "knn.top1"),
        ({"dataset": "d", "knn": {"top1": "61%"}}, "knn.top1"),
        ({"dataset": "d", "knn": {"top1": True}}, "knn.top1"),
        ({"knn": {"top1": 50.0}}, "no dataset"),
        ({"dataset": "d", "knn": 50.0}, "knn"),
        ({"dataset": "d", "results": [{"metric": "top1", "value": 1.0}]}, "protocol"),
        (
            {
                "dataset": "d",
                "knn": {"top1": 1.0},
                "results": [{"protocol": "knn", "metric": "top1", "value": 2.0}],
            },
            "twice",
        ),
    ],
)
def test_bad_results_are_rejected_with_the_key(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_eval_results(bad, source="r.json")


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
    (tmp_path / "linear.json").write_text(
        json.dumps({"dataset": "ucf101", "split": "test", "linear_probe": {"top1": 12.5}})
    )
    (tmp_path / "knn.json").write_text(
        json.dumps({"dataset": "ucf101", "split": "test", "knn": {"top1": 10.0}})
    )
    argv = ["card", str(folder), "--model-id", "org/hdc-tiny", "--config", str(tmp_path / "run_config.yaml")]
    assert main([*argv, "--results", str(tmp_path / "linear.json"), str(tmp_path / "knn.json")]) == 0
    assert capsys.readouterr().out.strip() == str(folder / "README.md")
    card = ModelCard.load(folder / "README.md")
    assert {(r.metric_name, r.metric_value) for r in card.data.eval_results} == {
        ("Linear probe top-1 accuracy", 12.5),
        ("kNN top-1 accuracy", 10.0),
    }
    assert 'from_pretrained("org/hdc-tiny", trust_remote_code=True)' in card.text

    (tmp_path / "bad.json").write_text('{"dataset": "ucf101", "knn": {"top1": "n/a"}}')
    assert main(["card", str(folder), "--results", str(tmp_path / "bad.json")]) == 2
    assert "bad.json" in capsys.readouterr().err
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
        ("Linear probe top-1 accuracy", 61.5),
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
