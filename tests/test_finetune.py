"""training/finetune.py as users run it: the accuracy and the card checked against numbers computed here, the run's
config and logs, and a resumed run that reaches the uninterrupted run's weights bit for bit."""

import json
import sys

import pytest
import torch
import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .fake_hub import check_card_metadata
from .training_runs import REPO, TINY_RUN, final_checkpoint_weights, run_ok

FINETUNE = REPO / "training" / "finetune.py"
STEPS = 5  # 12 training videos in batches of 4: 3 steps an epoch, so the run crosses an epoch boundary
CLIPS, CROPS = 2, "three"


def finetune_args(encoder_dir, data, output_dir, *options):
    return [
        sys.executable, str(FINETUNE), "--model_name_or_path", str(encoder_dir), "--train_dir", str(data["train"]),
        "--validation_dir", str(data["validation"]), "--output_dir", str(output_dir),
        "--per_device_train_batch_size", "4", "--checkpointing_steps", "2", "--logging_steps", "1",
        "--num_test_clips", str(CLIPS), "--test_crops", CROPS, "--dataloader_num_workers", "0", *options,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, tiny_folders):
    """An encoder whose card was rendered for the Hub repo org/tiny-encoder (a pushed folder), fine-tuned for
    STEPS steps without interruption."""
    import hf_vssl
    from hf_vssl.hub import write_model_card

    root = tmp_path_factory.mktemp("finetune")
    torch.manual_seed(0)
    hf_vssl.MLFOModel(hf_vssl.MLFOConfig(**TINY_RUN["model"])).save_pretrained(root / "encoder")
    write_model_card(root / "encoder", model_id="org/tiny-encoder")
    result = run_ok(
        finetune_args(root / "encoder", tiny_folders, root / "straight", "--max_steps", str(STEPS))
    )
    return {"root": root, "out": root / "straight", "stdout": result.stdout}


def _independent_accuracy(final_dir, validation_dir) -> float:
    """Top-1 with the softmax averaged over every view, computed video by video from the files with the saved
    video processor and a plain model call (not the evaluation loader nor multi_view_accuracy)."""
    import hf_vssl

    model = hf_vssl.MLFOForVideoClassification.from_pretrained(final_dir, dtype=torch.float32).eval()
    processor = hf_vssl.VideoSSLVideoProcessor.from_pretrained(final_dir)
    assert (processor.num_clips, processor.spatial_crops) == (CLIPS, CROPS)
    videos = sorted(validation_dir.rglob("*.mp4"))
    correct = 0
    with torch.no_grad():
        for video in videos:
            views = processor(str(video), return_tensors="pt")["pixel_values"][
                0
            ]  # [clips x crops, T, C, H, W]
            assert views.shape[0] == CLIPS * 3
            probabilities = model(views).logits.softmax(-1).mean(0)
            correct += int(probabilities.argmax()) == model.config.label2id[video.parent.name]
    return correct / len(videos)


def test_finetune_accuracy_and_card_match_numbers_computed_here(finetuned, tiny_folders):
    out, final = finetuned["out"], finetuned["out"] / "final"
    accuracy = _independent_accuracy(final, tiny_folders["validation"])
    (record,) = json.loads((out / "results.json").read_text())["results"]
    assert (record["protocol"], record["metric"], record["split"]) == ("finetune", "top1", "validation")
    assert record["value"] == pytest.approx(accuracy, abs=1e-12)
    assert (
        f"Fine-tuned top-1 accuracy on {tiny_folders['validation']}: {100 * accuracy:.1f}%"
        in finetuned["stdout"]
    )

    # The card's metadata through huggingface_hub's own card classes: one EvalResult with the value rounded.
    card = ModelCard.load(final / "README.md")
    data = ModelCardData(**card.data.to_dict())
    (result,) = data.eval_results
    assert isinstance(result, EvalResult)
    assert (result.metric_type, result.metric_name, result.metric_value) == (
        "accuracy",
        "Fine-tuning top-1 accuracy",
        round(100 * accuracy, 1),
    )
    # the data's clean name (the folders are <tmp>/motion/{train,validation}), never a local path
    assert (result.dataset_type, result.dataset_name, result.dataset_split) == (
        "motion",
        "motion",
        "validation",
    )
    assert data.datasets == ["motion"]
    assert data.base_model == "org/tiny-encoder"  # the encoder folder's card was rendered for that Hub repo
    assert data.model_name == "tiny-encoder-finetuned-motion" and data.pipeline_tag == "video-classification"
    assert check_card_metadata(card.content) == ([], [])
    limitations = card.text.split("## Limitations", 1)[1].split("##", 1)[0]
    assert "not a classifier" not in limitations
    assert "A classifier for the 4 classes it was fine-tuned on (down, left, right, up)" in limitations

    # The widget's example output is what pipeline() gives for the example clip shipped in the folder.
    from transformers import pipeline

    (widget,) = card.data.widget
    assert widget["src"] == "example_clip.mp4" and (final / "example_clip.mp4").stat().st_size < 20_000
    predictions = pipeline("video-classification", model=str(final))(str(final / "example_clip.mp4"), top_k=4)
    assert widget["output"] == [{"label": p["label"], "score": round(p["score"], 4)} for p in predictions]


def test_finetune_writes_its_config_first_and_logs_every_step(finetuned):
    out = finetuned["out"]
    assert yaml.safe_load((out / "run_config.yaml").read_text())["max_steps"] == STEPS
    records = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["event"] == "config"
    assert [r["step"] for r in records if "train/loss" in r] == list(range(1, STEPS + 1))
    (final,) = [r for r in records if "finetune/top1" in r]
    assert final["finetune/top1"] == json.loads((out / "results.json").read_text())["results"][0]["value"]


def test_finetune_resumed_run_reaches_the_same_weights_bitwise(finetuned, tiny_folders):
    """Stopped at step 2 (mid-epoch 0), resumed to STEPS (into epoch 1): the classifier's dropout, the data
    order and the optimizer state all continue as in the uninterrupted run."""
    root = finetuned["root"]
    _, script, *args = finetune_args(root / "encoder", tiny_folders, root / "resumed")
    args += ["--test_crops", "center"]  # the test set's score plays no part here
    # both runs in one process (a fresh interpreter each would double the time), one Accelerator after the other
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from finetune import main; "
        "from accelerate.state import AcceleratorState; args = sys.argv[2:]; "
        f"main([*args, '--max_steps', '2']); AcceleratorState._reset_state(True); "
        f"main([*args, '--max_steps', '{STEPS}', '--resume_from_checkpoint', 'latest'])"
    )
    run_ok([sys.executable, "-c", code, str(FINETUNE.parent), *args])
    straight, resumed = final_checkpoint_weights(finetuned["out"]), final_checkpoint_weights(root / "resumed")
    assert straight.keys() == resumed.keys()
    different = [name for name in straight if not straight[name].equal(resumed[name])]
    assert not different, different
