"""The pretraining script as users run it: two real processes, exact resume, bad input, and a push to a Hub."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

from hf_vssl.evaluation.results import EvalResults
from hf_vssl.train.arguments import PretrainArguments, parse_arguments

from .fake_hub import fake_hub_fixture  # noqa: F401
from .training_runs import (
    EVALUATE,
    PRETRAIN,
    REPO,
    TINY_MODEL,
    TINY_RUN,
    final_checkpoint_weights,
    run_args,
    run_config,
    run_ok,
)


def _run_failing(args, timeout=300) -> str:
    """Run a command that must fail; return its stderr (where the error message is)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    assert result.returncode != 0, f"{' '.join(map(str, args))} succeeded but should have failed"
    return result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_see_disjoint_data_and_write_each_checkpoint_once(tmp_path, tiny_data):
    out = tmp_path / "run"
    run_ok(
        [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--main_process_port", str(_free_port()), str(PRETRAIN),
            *run_args(run_config(tmp_path), tiny_data["shards"], out, "--max_steps", "3", "--record_sample_keys"),
        ],
        env={"ACCELERATE_USE_CPU": "1"},
    )  # fmt: skip
    keys = [
        [
            line.split("\t")[1].strip()
            for line in (out / f"sample_keys_rank{rank}.txt").read_text().splitlines()
        ]
        for rank in (0, 1)
    ]
    assert len(keys[0]) == len(keys[1]) == 3 * 2  # 3 steps of 2 videos on each process
    assert not set(keys[0]) & set(keys[1])
    assert len(set(keys[0])) == len(keys[0]) and len(set(keys[1])) == len(keys[1])
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint_0", "checkpoint_1"]  # step 2 and the end (step 3), once each
    for checkpoint in checkpoints:
        assert len(list((out / "checkpoints" / checkpoint).glob("model*.safetensors"))) == 1
        assert sorted(p.name for p in (out / "checkpoints" / checkpoint).glob("random_states_*.pkl")) == [
            "random_states_0.pkl",
            "random_states_1.pkl",
        ]
    steps = [
        json.loads(line).get("step") for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [s for s in steps if s is not None] == [1, 2, 3]  # logged by one process only
    assert (out / "final" / "model.safetensors").exists()


@pytest.mark.parametrize(
    "accumulation, first_steps, all_steps",
    [
        # 12 videos, batch 2: 6 steps per epoch; 8 steps cross into epoch 1, where the logit queue joins the
        # codes and the graph term starts.
        (1, 3, 8),
        # 6 batches of 4-batch windows: one step per epoch and an incomplete window at each epoch's end, which
        # must not run into the next epoch (the resumed run starts its epoch afresh). Workers restarted every
        # epoch (the other case keeps them across epochs, the default).
        (4, 1, 3),
    ],
)
def test_resumed_run_reaches_the_same_weights_bitwise(
    tmp_path, tiny_data, accumulation, first_steps, all_steps
):
    config = run_config(
        tmp_path,
        num_train_epochs=2,
        gradient_accumulation_steps=accumulation,
        dataloader_persistent_workers=accumulation == 1,
    )

    def pretrain(output_dir, *options):
        run_ok([sys.executable, str(PRETRAIN), *run_args(config, tiny_data["train"], output_dir, *options)])

    pretrain(tmp_path / "straight", "--max_steps", str(all_steps))
    pretrain(tmp_path / "resumed", "--max_steps", str(first_steps))
    pretrain(tmp_path / "resumed", "--max_steps", str(all_steps), "--resume_from_checkpoint", "latest")
    straight = final_checkpoint_weights(tmp_path / "straight")
    resumed = final_checkpoint_weights(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    different = [name for name in straight if not straight[name].equal(resumed[name])]
    assert not different, different


CTRLAUG_RUN = {
    **TINY_RUN,
    "method": "ctrlaug",
    "model": {
        **TINY_MODEL,
        "num_frames": 8,
        "gradient_reversal_strength": 1.0,
        "gradient_reversal_warmup_epochs": 3,
    },
    "recipe": {},
}


def test_ctrlaug_run_resumed_mid_warm_up_reaches_the_same_weights_bitwise(tmp_path, tiny_data):
    """The reversal strength comes from the epoch the loop hands to `set_epoch`: a run stopped in epoch 1 of a
    3-epoch ramp (strength 1/3) and resumed into epoch 2 (2/3) equals the uninterrupted run bit for bit."""
    config = tmp_path / "ctrlaug.yaml"
    config.write_text(yaml.safe_dump({**CTRLAUG_RUN, "num_train_epochs": 3}))

    def pretrain(output_dir, *options):
        run_ok([sys.executable, str(PRETRAIN), *run_args(config, tiny_data["train"], output_dir, *options)])

    pretrain(tmp_path / "straight", "--max_steps", "14")
    pretrain(tmp_path / "resumed", "--max_steps", "8")
    pretrain(tmp_path / "resumed", "--max_steps", "14", "--resume_from_checkpoint", "latest")
    straight = final_checkpoint_weights(tmp_path / "straight")
    resumed = final_checkpoint_weights(tmp_path / "resumed")
    assert straight.keys() == resumed.keys() and any(key.startswith("critic_high.") for key in straight)
    different = [name for name in straight if not straight[name].equal(resumed[name])]
    assert not different, different


def test_resuming_a_finished_run_or_an_older_checkpoint(tmp_path, tiny_data):
    out = tmp_path / "run"
    args = run_args(run_config(tmp_path), tiny_data["train"], out)
    run_ok([sys.executable, str(PRETRAIN), *args, "--max_steps", "3"])  # checkpoints after steps 2 and 3

    def logged_steps():
        lines = (out / "logs" / "metrics.jsonl").read_text().splitlines()
        return [r["step"] for r in map(json.loads, lines) if "train/loss" in r]

    assert logged_steps() == [1, 2, 3]
    # A finished run resumed with the same limit has nothing left to do.
    run_ok([sys.executable, str(PRETRAIN), *args, "--max_steps", "3", "--resume_from_checkpoint", "latest"])
    assert logged_steps() == [1, 2, 3]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint_0", "checkpoint_1"]
    # Going back to the older checkpoint saves after the newest one instead of colliding with it.
    older = out / "checkpoints" / "checkpoint_0"
    run_ok([sys.executable, str(PRETRAIN), *args, "--max_steps", "4", "--resume_from_checkpoint", str(older)])
    assert logged_steps() == [1, 2, 3, 3, 4]
    # step 4 saved as checkpoint_2; the limit of two then drops checkpoint_0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint_1", "checkpoint_2"]


def _good_and_bad_shards(folder: Path, good_shards: Path, bad: dict) -> Path:
    """Two WebDataset shards: every video of ``good_shards`` in the first, only bad files in the second (with the
    same members, so that both shards have one schema)."""
    import io
    import tarfile

    folder.mkdir()
    members = []
    for shard in sorted(good_shards.glob("*.tar")):
        with tarfile.open(shard) as tar:
            members += [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    template = {
        m.name.rsplit(".", 1)[1]: data for m, data in members if m.name.startswith(members[0][0].name[:-4])
    }
    bad_members = []
    for kind, path in bad.items():
        for extension, data in template.items():
            info = tarfile.TarInfo(f"bad/bad_{kind}.{extension}")
            bad_members.append((info, path.read_bytes() if extension == "mp4" else data))
    for index, shard_members in enumerate((members, bad_members)):
        with tarfile.open(folder / f"train-{index:05d}.tar", "w") as tar:
            for info, data in shard_members:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return folder


def test_a_worker_with_only_bad_files_trains_counts_them_and_warns_once(tmp_path, tiny_data):
    """Worker 1 of 2 reads a shard of bad files only: the run trains on the other worker's 12 videos in both
    epochs, logs 5 distinct bad files per epoch and 5 in the run, and warns once per file."""
    from .video_factory import write_bad_files

    bad = write_bad_files(tmp_path / "bad")
    train = _good_and_bad_shards(tmp_path / "train", tiny_data["shards"], bad)
    config = run_config(tmp_path, num_train_epochs=2, per_device_train_batch_size=4, dataloader_num_workers=2)
    out = tmp_path / "run"
    result = run_ok([sys.executable, str(PRETRAIN), *run_args(config, train, out)])
    records = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train/loss" in r] == list(range(1, 7))  # 12 videos / 4, 2 epochs
    epochs = [r for r in records if "data/epoch" in r]
    assert [
        (
            r["data/epoch"],
            r["data/videos_in_epoch"],
            r["data/skipped_videos_epoch"],
            r["data/skipped_videos_total"],
        )
        for r in epochs
    ] == [(0, 12, len(bad), len(bad)), (1, 12, len(bad), len(bad))]
    warnings = [line for line in result.stderr.splitlines() if "Skipping video" in line]
    assert len(warnings) == len(bad) and all(any(f"bad_{kind}" in w for w in warnings) for kind in bad), (
        warnings
    )


def test_a_source_too_small_for_one_batch_fails_instead_of_spinning(tmp_path, tiny_data):
    small = tmp_path / "small" / "left"
    small.mkdir(parents=True)
    video = sorted(tiny_data["train"].rglob("*.mp4"))[0]
    (small / video.name).write_bytes(video.read_bytes())
    stderr = _run_failing(
        [
            sys.executable,
            str(PRETRAIN),
            *run_args(run_config(tmp_path), small.parent, tmp_path / "run", "--max_steps", "3"),
        ]
    )
    assert "yielded no batch" in stderr


def test_bad_run_arguments_fail_clearly(tmp_path, tiny_data):
    with pytest.raises(ValueError, match="Unknown key"):
        parse_arguments(["--config", str(run_config(tmp_path, learning_rat=0.1))])
    with pytest.raises(ValueError, match="Unknown option --learning_rat"):
        parse_arguments(["--config", str(run_config(tmp_path)), "--learning_rat", "0.1"])
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        parse_arguments(run_args(run_config(tmp_path), tmp_path / "does-not-exist", "x"))
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        parse_arguments(["--config", str(tmp_path / "missing.yaml")])
    args = parse_arguments(
        run_args(
            run_config(tmp_path),
            tiny_data["train"],
            "x",
            "--model.backbone",
            "r3d",
            "--lr_decay_epochs",
            "3",
            "5",
        )
    )
    assert (
        isinstance(args, PretrainArguments)
        and args.model["backbone"] == "r3d"
        and args.lr_decay_epochs == [3, 5]
    )

    out = tmp_path / "taken"
    out.mkdir()
    (out / "run_config.yaml").write_text("method: mlfo\n")
    stderr = _run_failing(
        [sys.executable, str(PRETRAIN), *run_args(run_config(tmp_path), tiny_data["train"], out)]
    )
    assert "holds another run" in stderr
    (out / "checkpoints" / "checkpoint_0").mkdir(parents=True)
    args = parse_arguments(run_args(run_config(tmp_path), tiny_data["train"], out, "--overwrite_output_dir"))
    from accelerate import Accelerator

    from hf_vssl.train.pretrain import prepare_output_dir

    (out / "notes.txt").write_text("mine")
    prepare_output_dir(args, Accelerator(cpu=True))
    # replaced: nothing of the old run is left to collide with, and nothing else is touched
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_run_arguments_take_the_types_of_their_fields(tmp_path, tiny_data):
    # YAML reads 3e-4 as a string and a lone 70 as an int: both must still reach the optimizer as declared.
    config = run_config(tmp_path, learning_rate="3e-4", lr_decay_epochs=70, report_to="tensorboard")
    args = parse_arguments(run_args(config, tiny_data["train"], "x", "--max_grad_norm", "1e3"))
    assert (args.learning_rate, args.lr_decay_epochs, args.report_to) == (3e-4, [70], ["tensorboard"])
    assert args.max_grad_norm == 1000.0 and isinstance(args.max_grad_norm, float)
    args = parse_arguments(run_args(config, tiny_data["train"], "x", "--learning_rate", "1e-4"))
    assert args.learning_rate == 1e-4
    for option, value, message in (
        ("--learning_rate", "fast", "--learning_rate.*invalid float value: 'fast'"),
        ("--num_train_epochs", "1.5", "--num_train_epochs.*invalid int value: '1.5'"),
        ("--knn_monitor_epochs", "0", "`knn_monitor_epochs` must be >= 1"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_arguments(run_args(config, tiny_data["train"], "x", option, value))
    with pytest.raises(ValueError, match="`model` must be dict"):
        parse_arguments(run_args(run_config(tmp_path, model="r3d"), tiny_data["train"], "x"))


def _unlabelled_copy(folder: Path, destination: Path, count: int) -> Path:
    """The first ``count`` videos of a class folder, side by side with no class sub-folders: no labels."""
    destination.mkdir()
    for video in sorted(folder.rglob("*.mp4"))[:count]:
        (destination / video.name).write_bytes(video.read_bytes())
    return destination


def test_a_validation_run_needs_labelled_training_data_before_it_trains(tmp_path, tiny_data):
    unlabelled = _unlabelled_copy(tiny_data["train"], tmp_path / "unlabelled", 4)
    out = tmp_path / "run"
    options = ("--validation_dir", str(tiny_data["validation"]))
    stderr = _run_failing(
        [sys.executable, str(PRETRAIN), *run_args(run_config(tmp_path), unlabelled, out, *options)]
    )
    assert "pretrain.py: error: " in stderr and "no labels" in stderr and str(unlabelled) in stderr
    assert "Traceback" not in stderr
    assert not (out / "checkpoints").exists()  # refused before the first step, not after the last


def test_evaluate_and_finetune_refuse_an_unlabelled_source_in_one_line(tmp_path, tiny_data):
    unlabelled = _unlabelled_copy(tiny_data["validation"], tmp_path / "unlabelled", 3)
    encoder_dir = tmp_path / "encoder"
    import hf_vssl

    hf_vssl.MLFOModel(hf_vssl.MLFOConfig(**TINY_RUN["model"])).save_pretrained(encoder_dir)
    data = ["--model_name_or_path", str(encoder_dir), "--train_dir", str(unlabelled)]
    data += ["--validation_dir", str(tiny_data["validation"])]
    stderr = _run_failing([sys.executable, str(EVALUATE), *data])
    assert "evaluate.py: error: " in stderr and "no labels" in stderr and str(unlabelled) in stderr
    assert "Traceback" not in stderr
    finetune = REPO / "training" / "finetune.py"
    stderr = _run_failing([sys.executable, str(finetune), *data, "--output_dir", str(tmp_path / "finetuned")])
    assert "finetune.py: error: " in stderr and "no class labels" in stderr and str(unlabelled) in stderr
    assert "Traceback" not in stderr


def test_pretrain_pushes_a_loadable_repo_with_measured_results(
    tmp_path, tiny_data, fake_hub, no_hf_vssl_runner
):
    hub_env = fake_hub.env(tmp_path / "hf_home")
    out = tmp_path / "run"
    run_ok(
        [
            sys.executable, str(PRETRAIN), *run_args(run_config(tmp_path), tiny_data["train"], out, "--max_steps", "2"),
            "--validation_dir", str(tiny_data["validation"]), "--push_to_hub", "--hub_model_id", "tester/mlfo-tiny",
        ],
        env=hub_env,
    )  # fmt: skip
    # the end-of-run kNN and retrieval results: in results.json and, rounded, on the card
    records = EvalResults.load(out / "results.json")
    assert {(r.protocol, r.measured_with) for r in records} == {
        ("knn", "2 clips x center crop"),
        ("retrieval", "2 clips x center crop"),
    }
    card = ModelCard.load(out / "final" / "README.md")
    assert sorted((r.metric_name, r.metric_value) for r in card.data.eval_results) == sorted(
        (f"{r.protocol_name} {r.metric_name}", round(100 * r.value, 1)) for r in records
    )

    import torch

    import hf_vssl

    encoder = hf_vssl.MLFOModel.from_pretrained(out / "final", dtype=torch.float32).eval()
    clip = torch.randn(1, 16, 3, 32, 32)
    torch.save({"clip": clip, "features": encoder(clip).pooler_output.detach()}, tmp_path / "expected.pt")
    no_hf_vssl_runner(
        f"""
        import torch
        from transformers import AutoModel
        from huggingface_hub import hf_hub_download, ModelCard
        model = AutoModel.from_pretrained("tester/mlfo-tiny", trust_remote_code=True, dtype=torch.float32).eval()
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        with torch.no_grad():
            assert torch.allclose(model(expected["clip"]).pooler_output, expected["features"], atol=1e-6)
        card = ModelCard.load(hf_hub_download("tester/mlfo-tiny", "README.md"))
        assert card.data.eval_results, "the pushed card carries no results"
        print("ok")
        """,
        env=hub_env,
    )


def test_the_results_evaluate_writes_render_into_a_card_with_the_numbers_computed(tmp_path, tiny_data):
    import torch

    import hf_vssl
    from hf_vssl.evaluation.runner import evaluate_encoder
    from hf_vssl.hub import main as hub_main

    encoder_dir = tmp_path / "encoder"
    torch.manual_seed(0)
    hf_vssl.MLFOModel(hf_vssl.MLFOConfig(**TINY_RUN["model"])).save_pretrained(encoder_dir)
    results_file = tmp_path / "results.json"
    run_ok(
        [
            sys.executable, str(EVALUATE), "--model_name_or_path", str(encoder_dir), "--train_dir", str(tiny_data["train"]),
            "--validation_dir", str(tiny_data["validation"]), "--protocols", "knn", "retrieval", "--num_clips", "2",
            "--dataloader_num_workers", "0", "--output_json", str(results_file), "--dataset", "tiny-motion",
        ]
    )  # fmt: skip
    # The same evaluation in this process, without the results file or the card code.
    encoder = hf_vssl.MLFOModel.from_pretrained(encoder_dir, dtype=torch.float32).eval()
    computed = evaluate_encoder(
        encoder,
        str(tiny_data["train"]),
        str(tiny_data["validation"]),
        protocols=("knn", "retrieval"),
        num_frames=16,
        image_size=32,
        num_clips=2,
        num_workers=0,
    )
    assert hub_main(["card", str(encoder_dir), "--model-id", "org/tiny", "--results", str(results_file)]) == 0
    card = ModelCard.load(encoder_dir / "README.md")
    names = {
        "knn/top1": "kNN top-1 accuracy",
        **{f"retrieval/R@{k}": f"Retrieval Recall@{k}" for k in (1, 5, 10, 20, 50)},
    }
    assert {(r.metric_name, r.metric_value) for r in card.data.eval_results} == {
        (names[key], round(100 * value, 1)) for key, value in computed.items()
    }
    assert {(r.dataset_type, r.dataset_split) for r in card.data.eval_results} == {
        ("tiny-motion", "validation")
    }
    assert (
        "| kNN | tiny-motion | validation | top-1 accuracy |" in card.text
        and "2 clips x center crop" in card.text
    )


def test_finetune_without_a_single_batch_fails_instead_of_publishing_an_untrained_model(tmp_path, tiny_data):
    import hf_vssl

    encoder_dir = tmp_path / "encoder"
    hf_vssl.MLFOModel(hf_vssl.MLFOConfig(**TINY_RUN["model"])).save_pretrained(encoder_dir)
    stderr = _run_failing(
        [
            sys.executable, str(REPO / "training" / "finetune.py"), "--model_name_or_path", str(encoder_dir),
            "--train_dir", str(tiny_data["train"]), "--validation_dir", str(tiny_data["validation"]),
            "--output_dir", str(tmp_path / "ft"), "--per_device_train_batch_size", "16",
            "--dataloader_num_workers", "0",
        ]
    )  # fmt: skip
    assert "took no training step" in stderr
    assert not (tmp_path / "ft" / "final").exists()


def test_evaluation_numbers_the_test_classes_like_the_training_classes(tmp_path, tiny_data):
    """A validation folder without 'down' numbers left/right/up 0/1/2 itself; evaluation must use 1/2/3."""
    import shutil

    import hf_vssl
    from hf_vssl.evaluation.runner import evaluation_recipe, video_features

    validation = tmp_path / "validation"
    for name in ("left", "right", "up"):
        shutil.copytree(tiny_data["validation"] / name, validation / name)
    encoder = hf_vssl.MLFOModel(hf_vssl.MLFOConfig(**TINY_RUN["model"])).eval()
    features = video_features(
        encoder,
        str(validation),
        evaluation_recipe(16, 32, num_clips=1),
        split="validation",
        num_workers=0,
        label_names=["down", "left", "right", "up"],
    )
    assert sorted(features.labels.tolist()) == [1, 1, 2, 2, 3, 3]


def _knn_top1(train, test, k=20, temperature=0.07) -> float:
    """Weighted cosine kNN (InstDisc style) written out here: train-mean centring, L2 norm, exp(s/T) votes."""
    import torch

    mean = train.features.mean(0, keepdim=True)
    bank = torch.nn.functional.normalize(train.features - mean, dim=1)
    queries = torch.nn.functional.normalize(test.features - mean, dim=1)
    correct = 0
    for query, label in zip(queries, test.labels):
        similarity = bank @ query
        top = similarity.topk(min(k, len(bank))).indices
        votes = torch.zeros(int(train.labels.max()) + 1, dtype=torch.float64)
        for index in top:
            votes[train.labels[index]] += torch.exp(similarity[index].double() / temperature)
        correct += int(votes.argmax() == label)
    return correct / len(queries)


def test_knn_monitor_measures_the_weights_of_its_epoch(tmp_path, tiny_data):
    """With a validation source the loop logs kNN top-1 every `knn_monitor_epochs` epochs (not after the last
    one, which the final evaluation covers); the logged value is the kNN accuracy of that epoch's weights,
    recomputed here from the checkpoint taken at the same step."""
    import torch
    from safetensors.torch import load_file

    from hf_vssl import MLFOForPreTraining
    from hf_vssl.data.sources import load_video_source, source_label_names
    from hf_vssl.evaluation.runner import evaluation_recipe, video_features

    out = tmp_path / "run"
    config = run_config(tmp_path, num_train_epochs=3, checkpointing_steps=6, checkpoints_total_limit=None)
    result = run_ok(
        [
            sys.executable, str(PRETRAIN), *run_args(config, tiny_data["train"], out),
            "--validation_dir", str(tiny_data["validation"]), "--knn_monitor_epochs", "2",
        ]
    )  # fmt: skip
    records = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    monitored = {r["step"]: r["val/knn/top1"] for r in records if "val/knn/top1" in r}
    # 12 videos in batches of 2: 6 steps per epoch; the monitor after epoch 2, the final evaluation at step 18
    assert sorted(monitored) == [12, 18]
    # a folder's size is known: the progress bar shows its length (18 steps) from the first step on
    assert re.search(r"(?<!\d)0/18\b", result.stderr), result.stderr[-2000:]
    assert any("val/retrieval/R@1" in r and r["step"] == 18 for r in records)

    checkpoints = sorted((out / "checkpoints").glob("checkpoint_*"), key=lambda p: int(p.name.split("_")[-1]))
    assert len(checkpoints) == 3  # steps 6, 12, 18
    checkpoint = checkpoints[1]
    model = MLFOForPreTraining(MLFOForPreTraining.config_class(**TINY_RUN["model"]))
    model.load_state_dict(load_file(checkpoint / "model.safetensors"))
    encoder = model.base_model.eval()
    recipe = evaluation_recipe(16, 32, 2, None)
    with torch.no_grad():
        train = video_features(encoder, str(tiny_data["train"]), recipe, num_workers=0)
        test = video_features(
            encoder, str(tiny_data["validation"]), recipe, split="validation", num_workers=0,
            label_names=source_label_names(load_video_source(str(tiny_data["train"]))),
        )  # fmt: skip
    assert monitored[12] == pytest.approx(_knn_top1(train, test))
