"""Fine-tune a pretrained encoder on a labelled video source and test it with multiple clips and crops.

    accelerate launch training/finetune.py --model_name_or_path runs/mlfo/final --train_dir data/train \
        --validation_dir data/test --output_dir runs/mlfo-ft [--num_train_epochs 30 --learning_rate 1e-3 ...]

The whole network trains, the backbone at `backbone_lr_scale` (1/10) of the head's learning rate, as in the CoCLR
protocol; testing averages the softmax over `num_test_clips` uniformly spaced clips times the spatial crops
(`test_crops`: center, three or ten). The result is an `XForVideoClassification` folder with processors and a
model card, which `pipeline("video-classification", model=...)` loads.
"""

from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import AutoModelForVideoClassification

from hf_vssl.data.loader import build_view_dataloader, stage2_placement
from hf_vssl.data.recipes import build_recipe
from hf_vssl.data.sources import align_labels, load_video_source, source_label_names, split_source_for_process
from hf_vssl.evaluation.classifier import multi_view_accuracy
from hf_vssl.evaluation.results import EvalResults, describe_views
from hf_vssl.evaluation.runner import evaluation_recipe

from .arguments import RUN_CONFIG, check_local_path, parse_arguments, save_arguments
from .collectives import all_processes_have_batch
from .release import save_release
from .speed import channels_last_clips, compile_model, to_channels_last


@dataclass
class FinetuneArguments:
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
    channels_last: bool | None = None  # channels_last_3d model and clips; default (null): on CUDA only
    dataloader_num_workers: int = 2
    seed: int = 0
    trust_remote_code: bool = False
    push_to_hub: bool = False
    hub_model_id: str | None = None

    def validate(self) -> None:
        for name in ("model_name_or_path", "train_dir", "validation_dir", "output_dir"):
            if not getattr(self, name):
                raise ValueError(f"`--{name}` is required.")
        for name in ("train_dir", "validation_dir"):
            check_local_path(name, getattr(self, name))
        for name in ("num_train_epochs", "per_device_train_batch_size", "num_test_clips"):
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
    if (output_dir / RUN_CONFIG).exists() and not args.overwrite_output_dir:
        raise FileExistsError(f"{output_dir} holds another run; pass --overwrite_output_dir to replace it.")
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    set_seed(args.seed)

    train_source = load_video_source(args.train_dir)
    label_names = source_label_names(train_source)
    if not label_names:
        raise ValueError(
            f"{args.train_dir} has no class labels: fine-tuning needs class sub-folders or a label column."
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
    train_loader = build_view_dataloader(
        split_source_for_process(
            train_source.shuffle(seed=args.seed, buffer_size=256),
            accelerator.process_index,
            accelerator.num_processes,
        ),
        train_recipe,
        batch_size=args.per_device_train_batch_size,
        num_workers=args.dataloader_num_workers,
        seed=args.seed,
        placement=placement,
        drop_last=True,
    )
    test_recipe = evaluation_recipe(
        config.num_frames, config.image_size, args.num_test_clips, args.test_crops
    )
    test_loader = build_view_dataloader(
        # the test classes numbered as the classifier's (each source numbers its own classes)
        align_labels(load_video_source(args.validation_dir, split="validation"), label_names),
        test_recipe,
        batch_size=max(1, args.per_device_train_batch_size // 2),
        num_workers=args.dataloader_num_workers,
        placement=placement,
    )

    for epoch in tqdm(
        range(args.num_train_epochs), disable=not accelerator.is_local_main_process, desc="epochs"
    ):
        train_loader.dataset.set_epoch(epoch)
        batches, steps = iter(train_loader), 0
        # Every process steps while all have a batch: DDP would hang on a process that ran out first.
        while all_processes_have_batch(accelerator, (batch := next(batches, None)) is not None):
            batch = placement.finish(batch, train_recipe)
            batch = channels_last_clips(batch) if channels_last else batch
            output = model(pixel_values=batch["pixel_values"][:, 0], labels=batch["labels"])
            accelerator.backward(output.loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps += 1
        if steps == 0:
            raise RuntimeError(
                f"Epoch {epoch} took no training step: {args.train_dir} has fewer usable videos than "
                f"{args.per_device_train_batch_size} per process x {accelerator.num_processes} processes."
            )

    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        accuracy = multi_view_accuracy(unwrapped, test_loader, test_recipe, placement)
        print(f"Fine-tuned top-1 accuracy on {args.validation_dir}: {100 * accuracy:.1f}%")
        results = EvalResults.from_metrics(
            {"finetune/top1": accuracy},
            dataset=args.validation_dir,
            split="validation",
            measured_with=describe_views(args.num_test_clips, args.test_crops),
        )
        hub_id = "/" in args.model_name_or_path and not Path(args.model_name_or_path).exists()
        save_release(
            unwrapped,
            output_dir,
            args,
            results,
            dataset_name=args.train_dir,
            base_model=args.model_name_or_path if hub_id else None,
            evaluation_views={"num_clips": args.num_test_clips, "spatial_crops": args.test_crops},
        )
        save_arguments(args, output_dir / RUN_CONFIG)  # marks the folder as holding a run
    accelerator.wait_for_everyone()
    return output_dir / "final"


def main(argv: list[str] | None = None) -> Path:
    return finetune(parse_arguments(argv, FinetuneArguments, description=__doc__.split("\n\n")[0]))


if __name__ == "__main__":
    main()
