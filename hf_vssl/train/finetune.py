"""Fine-tune a pretrained encoder on a labelled video source and test it with multiple clips and crops.

    accelerate launch training/finetune.py --model_name_or_path runs/mlfo/final --train_dir data/train \
        --validation_dir data/test --output_dir runs/mlfo-ft [--num_train_epochs 30 --learning_rate 1e-3 ...]

The whole network trains, the backbone at `backbone_lr_scale` (1/10) of the head's learning rate, as in the CoCLR
protocol; testing averages the softmax over `num_test_clips` uniformly spaced clips times the spatial crops
(`test_crops`: center, three or ten). The result is an `XForVideoClassification` folder with processors and a
model card, which `pipeline("video-classification", model=...)` loads.

The loop has pretraining's machinery (its pieces, from `hf_vssl.train.pretrain`): the run config written first,
checkpoints every `checkpointing_steps` (`--resume_from_checkpoint latest` continues a run to the same weights bit
for bit), the JSON-lines log plus `--report_to` trackers, `--max_steps`, and a Hub dataset as training data
(`--dataset_name`, its `validation` split as test data unless `--validation_dir` is given).
"""

from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from tqdm.contrib.logging import logging_redirect_tqdm
from transformers import AutoModelForVideoClassification

from hf_vssl.cli import UsageError, command_line
from hf_vssl.data.loader import build_view_dataloader, stage2_placement
from hf_vssl.data.recipes import build_recipe
from hf_vssl.data.sources import align_labels, load_video_source, source_label_names, split_source_for_process
from hf_vssl.evaluation.classifier import multi_view_accuracy
from hf_vssl.evaluation.results import EvalResults, describe_views
from hf_vssl.evaluation.runner import evaluation_recipe
from hf_vssl.hub import card_dataset_name, hub_model_id_of

from .arguments import check_local_path, check_model_path, parse_arguments
from .collectives import all_processes_have_batch
from .pretrain import (
    checkpoint_project,
    epoch_batches,
    prepare_output_dir,
    save_loop_checkpoint,
    start_run,
)
from .release import save_release
from .speed import channels_last_clips, compile_model, to_channels_last
from .tracking import build_trackers

logger = get_logger(__name__)


@dataclass
class FinetuneArguments:
    """What a fine-tuning run reads.

    Args:
        model_name_or_path: the pretrained encoder: a folder written by the training scripts or a Hub model id.
        train_dir: labelled training videos (class sub-folders or a label column).
        validation_dir: labelled videos the fine-tuned classifier is tested on.
        output_dir: folder for the run config, the results and the classifier (`final/`).
        overwrite_output_dir: replace the run already in `output_dir`.
        num_train_epochs: passes over the training videos.
        per_device_train_batch_size: videos per batch on each process.
        learning_rate: learning rate of the classification head.
        backbone_lr_scale: the backbone's learning rate as a fraction of the head's.
        weight_decay: weight decay of every parameter.
        classifier_dropout: dropout before the classification head.
        num_test_clips: uniformly spaced clips per test video whose softmax outputs are averaged.
        test_crops: spatial crops per test clip: center, three or ten.
        mixed_precision: no, fp16 or bf16.
        torch_compile: compile the model with torch.compile.
        torch_compile_backend: torch.compile's backend (inductor; aot_eager or eager capture graphs without code
            generation).
        channels_last: store the model and clips channels-last (channels_last_3d); default: on CUDA only.
        dataloader_num_workers: DataLoader worker processes that decode videos, per process.
        seed: seed of the head, the sample order and the augmentations.
        trust_remote_code: load a checkpoint's own code (needed for a Hub checkpoint when hf_vssl does not
            know its model type).
        push_to_hub: push the classifier to the Hub at the end (needs `hub_model_id`).
        hub_model_id: the Hub repo (org/name) to push to.
        dataset_name: a Hub dataset id: the training data when `train_dir` is not given.
        dataset_split: the split of `dataset_name` (or of `train_dir`) to train on.
        validation_split: the split of `validation_dir`, or of `dataset_name` without `validation_dir`, to test on.
        shuffle_buffer_size: videos in the shuffle buffer of a streamed source.
        max_steps: stop after this many optimizer steps (-1: run `num_train_epochs`).
        checkpointing_steps: save a checkpoint (accelerate state and the loop's counters) every N steps.
        checkpoints_total_limit: checkpoints kept (the oldest are deleted); none keeps all.
        resume_from_checkpoint: a checkpoint folder, or `latest`, to continue an interrupted run exactly.
        logging_steps: log the loss every N steps.
        report_to: trackers besides the JSON lines log (tensorboard, wandb, ...).
    """

    model_name_or_path: str | None = None
    train_dir: str | None = None
    validation_dir: str | None = None
    output_dir: str | None = None
    overwrite_output_dir: bool = False
    num_train_epochs: int = 10
    per_device_train_batch_size: int = 8
    learning_rate: float = 1e-3
    backbone_lr_scale: float = 0.1
    weight_decay: float = 1e-3
    classifier_dropout: float = 0.5
    num_test_clips: int = 10
    test_crops: str = "three"
    mixed_precision: str = "no"
    torch_compile: bool = False
    torch_compile_backend: str = "inductor"
    channels_last: bool | None = None
    dataloader_num_workers: int = 2
    seed: int = 0
    trust_remote_code: bool = False
    push_to_hub: bool = False
    hub_model_id: str | None = None
    # data from the Hub, schedule, checkpoints and logs, as in pretraining (PretrainArguments)
    dataset_name: str | None = None  # Hub dataset id: the training data when train_dir is not given
    dataset_split: str = "train"
    validation_split: str = "validation"  # of validation_dir, or of dataset_name without validation_dir
    shuffle_buffer_size: int = 256
    max_steps: int = -1
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = 2
    resume_from_checkpoint: str | None = None
    logging_steps: int = 10
    report_to: list[str] = field(default_factory=lambda: ["jsonl"])

    def validate(self) -> None:
        for name in ("model_name_or_path", "output_dir"):
            if not getattr(self, name):
                raise ValueError(f"`--{name}` is required.")
        if not (self.train_dir or self.dataset_name):
            raise ValueError(
                "Give the training data with `--train_dir` (local) or `--dataset_name` (Hub id)."
            )
        if not (self.validation_dir or self.dataset_name):
            raise ValueError("`--validation_dir` is required with `--train_dir`.")
        for name in ("train_dir", "validation_dir"):
            check_local_path(name, getattr(self, name))
        check_model_path("model_name_or_path", self.model_name_or_path)
        for name in (
            "num_train_epochs",
            "per_device_train_batch_size",
            "num_test_clips",
            "checkpointing_steps",
            "logging_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        if self.learning_rate <= 0:
            raise ValueError(f"`learning_rate` must be > 0, got {self.learning_rate}.")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("`--push_to_hub` needs `--hub_model_id`.")

    def to_dict(self):
        return dict(vars(self))


def finetune(args: FinetuneArguments) -> Path:
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=build_trackers(args.report_to, output_dir / "logs", logger),
        project_config=checkpoint_project(output_dir, args.checkpoints_total_limit),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    prepare_output_dir(args, accelerator)
    set_seed(args.seed)

    train_spec = args.train_dir or args.dataset_name
    train_source = load_video_source(train_spec, split=args.dataset_split)
    label_names = source_label_names(train_source)
    if not label_names:
        raise UsageError(
            f"{train_spec} has no class labels: fine-tuning needs class sub-folders or a label column."
        )
    model = AutoModelForVideoClassification.from_pretrained(
        args.model_name_or_path,
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        classifier_dropout=args.classifier_dropout,
        trust_remote_code=args.trust_remote_code,
        dtype=torch.float32,
    )
    config = model.config
    head = [p for name, p in model.named_parameters() if not name.startswith(model.base_model_prefix + ".")]
    backbone = list(model.base_model.parameters())
    optimizer = torch.optim.Adam(
        [
            {"params": backbone, "lr": args.learning_rate * args.backbone_lr_scale},
            {"params": head, "lr": args.learning_rate},
        ],
        weight_decay=args.weight_decay,
    )
    channels_last = accelerator.device.type == "cuda" if args.channels_last is None else args.channels_last
    if channels_last:
        to_channels_last(model)
    if args.torch_compile:
        # The loss sets the problem type at its first call; set it now, not in a recompilation at step 2.
        config.problem_type = config.problem_type or "single_label_classification"
        model = compile_model(model, args.torch_compile_backend)
    model, optimizer = accelerator.prepare(model, optimizer)

    placement = stage2_placement(accelerator.device)
    train_recipe = build_recipe("clip", clip_length=config.num_frames, output_size=(config.image_size,) * 2)
    if args.shuffle_buffer_size > 0:
        train_source = train_source.shuffle(seed=args.seed, buffer_size=args.shuffle_buffer_size)
    train_loader = build_view_dataloader(
        split_source_for_process(train_source, accelerator.process_index, accelerator.num_processes),
        train_recipe,
        batch_size=args.per_device_train_batch_size,
        num_workers=args.dataloader_num_workers,
        seed=args.seed,
        placement=placement,
        drop_last=True,
    )
    test_spec = args.validation_dir or args.dataset_name
    test_recipe = evaluation_recipe(
        config.num_frames, config.image_size, args.num_test_clips, args.test_crops
    )
    test_source = align_labels(load_video_source(test_spec, split=args.validation_split), label_names)
    test_loader = build_view_dataloader(
        # the test classes numbered as the classifier's (each source numbers its own classes); every process
        # tests its share of the videos
        split_source_for_process(test_source, accelerator.process_index, accelerator.num_processes),
        test_recipe,
        batch_size=max(1, args.per_device_train_batch_size // 2),
        num_workers=args.dataloader_num_workers,
        placement=placement,
    )

    state, total_steps, progress = start_run(accelerator, args, output_dir, "hf_vssl-finetune")
    finished = total_steps is not None and state.global_step >= total_steps
    while not finished and (total_steps is not None or state.epoch < args.num_train_epochs):
        epoch = state.epoch
        train_loader.dataset.set_epoch(epoch)
        model.train()
        batches = epoch_batches(train_loader, state.step_in_epoch)
        # Every process steps while all have a batch: DDP would hang on a process that ran out first.
        while all_processes_have_batch(accelerator, (batch := next(batches, None)) is not None):
            batch = placement.finish(batch, train_recipe)
            batch = channels_last_clips(batch) if channels_last else batch
            output = model(pixel_values=batch["pixel_values"][:, 0], labels=batch["labels"])
            accelerator.backward(output.loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.global_step += 1
            state.step_in_epoch += 1
            progress.update(1)
            if state.global_step % args.logging_steps == 0 or state.global_step == 1:
                loss = accelerator.reduce(output.loss.detach(), reduction="mean").item()
                accelerator.log(
                    {"train/loss": loss, "train/lr": optimizer.param_groups[-1]["lr"], "train/epoch": epoch},
                    step=state.global_step,
                )
                progress.set_postfix(loss=f"{loss:.4f}")
            if state.global_step % args.checkpointing_steps == 0:
                save_loop_checkpoint(accelerator, state)
            if total_steps is not None and state.global_step >= total_steps:
                finished = True
                break
        if not finished:
            if state.step_in_epoch == 0:
                raise RuntimeError(
                    f"Epoch {epoch} took no training step: {train_spec} has fewer usable videos than "
                    f"{args.per_device_train_batch_size} per process x {accelerator.num_processes} processes."
                )
            state.epoch += 1
            state.step_in_epoch = 0
            if total_steps is None and state.epoch >= args.num_train_epochs:
                finished = True
    save_loop_checkpoint(accelerator, state)
    progress.close()

    unwrapped = accelerator.unwrap_model(model)
    accuracy = multi_view_accuracy(unwrapped, test_loader, test_recipe, placement)
    if accelerator.is_main_process:
        print(f"Fine-tuned top-1 accuracy on {test_spec}: {100 * accuracy:.1f}%")
        accelerator.log({"finetune/top1": accuracy}, step=state.global_step)
        dataset = card_dataset_name(test_spec)
        results = EvalResults.from_metrics(
            {"finetune/top1": accuracy},
            dataset=dataset,
            split=args.validation_split,
            measured_with=describe_views(args.num_test_clips, args.test_crops),
        )
        base_model = hub_model_id_of(args.model_name_or_path)
        save_release(
            unwrapped,
            output_dir,
            args,
            results,
            dataset_name=args.dataset_name or args.train_dir,
            base_model=base_model,
            evaluation_views={"num_clips": args.num_test_clips, "spatial_crops": args.test_crops},
            model_id=args.hub_model_id
            or f"{(base_model or config.model_type).rsplit('/', 1)[-1]}-finetuned-{card_dataset_name(train_spec)}",
        )
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return output_dir / "final"


@command_line
def main(argv: list[str] | None = None) -> Path:
    args = parse_arguments(argv, FinetuneArguments, description=__doc__.split("\n\n")[0])
    with logging_redirect_tqdm():  # warnings print above the progress bar, not on its line
        return finetune(args)


if __name__ == "__main__":
    main()
