"""The method table: every method is one `MethodSpec`, and a method defined outside the package trains and loads."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, AutoModelForVideoClassification

import hf_vssl
from hf_vssl.data.synthetic import write_synthetic_videos
from hf_vssl.methods import get_method

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(hf_vssl.METHODS))
def test_every_method_is_registered_from_its_spec(name):
    spec = hf_vssl.METHODS[name]
    assert spec.config.model_type == name
    config = spec.config(hidden_sizes=[16, 16, 16, 16], embedding_size=8)
    assert type(AutoModel.from_config(config)) is spec.model
    assert type(AutoModelForVideoClassification.from_config(config)) is spec.classifier
    if spec.pretraining is not None:
        assert type(AutoModelForPreTraining.from_config(config)) is spec.pretraining
    recipe = spec.build_recipe(config)
    assert recipe.output_size == (config.image_size, config.image_size)
    for role in spec.configs:
        assert spec.config_file(role).is_file(), (name, role)


def test_unknown_names_get_suggestions():
    with pytest.raises(ValueError, match="did you mean 'graph_start_epoch'"):
        get_method("mlfo").build_config(grap_start_epoch=3)
    with pytest.raises(ValueError, match="Did you mean 'mlfo'"):
        get_method("mlf")
    with pytest.raises(ValueError, match="does not name a MethodSpec"):
        get_method("hf_vssl.methods:CONFIG_DIR")


def test_a_fourth_method_trains_saves_and_loads_through_its_spec_alone(tmp_path):
    """A toy method (tests/toy_method.py) trains two steps with training/pretrain.py and loads with Auto classes."""
    data = tmp_path / "videos"
    write_synthetic_videos(data, num_per_class=2, num_frames=12, size=(32, 32), classes=("left", "right"))
    output = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        str(REPO / "training" / "pretrain.py"),
        "--method", "tests.toy_method:TOY_METHOD",
        "--model", "{embedding_size: 8, hidden_sizes: [8, 8, 16, 16], depths: [1, 1, 1, 1], num_frames: 8, image_size: 32}",
        "--train_dir", str(data),
        "--output_dir", str(output),
        "--per_device_train_batch_size", "2",
        "--max_steps", "2",
        "--dataloader_num_workers", "0",
        "--shuffle_buffer_size", "0",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    log = [json.loads(line) for line in (output / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert log and all(torch.isfinite(torch.tensor(r["train/loss"])) for r in log if "train/loss" in r)
    final = output / "final"
    assert "A toy method registered by the tests" in (final / "README.md").read_text()

    from tests.toy_method import ToyConfig, ToyModel  # registers the method in this process too

    config = AutoConfig.from_pretrained(final)
    assert type(config) is ToyConfig and config.num_frames == 8
    encoder = AutoModel.from_pretrained(final)
    assert type(encoder) is ToyModel
    clip = torch.randn(1, 8, 3, 32, 32)
    assert encoder(clip).pooler_output.shape == (1, 16)
