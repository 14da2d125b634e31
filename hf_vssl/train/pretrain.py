"""One accelerate pretraining loop for every hf_vssl method.

The loop knows no method: it builds the pretraining model of ``args.method``'s table entry (``hf_vssl.methods``)
from ``args.model`` and its view recipe from ``args.recipe``, calls ``model(**views)`` and logs every scalar field
of the output, and calls the model's ``set_epoch(epoch)``, ``before_optimizer_step()`` (after the gradients are
complete, before clipping), ``after_optimizer_step()`` and ``training_metrics(output)`` (more values to log) hooks
when it has them.

Data stream from a ``datasets`` source, split once per process (never also by accelerate), decoded in DataLoader
workers (stage 1 of the view engine) and augmented batched (stage 2) where ``stage2_placement`` puts it: in the
workers for a CPU run, on the GPU otherwise. The workers live across epochs (``dataloader_persistent_workers``),
and every epoch a process trains on all its usable videos but at most one partial batch, whatever the number of
workers (``hf_vssl.data.loader.ViewBatches``); bad videos are counted as distinct files per epoch and in the whole
run (``data/skipped_videos_epoch``, ``data/skipped_videos_total``). Checkpoints are accelerate ``save_state``
folders plus the loop's counters; resuming replays the interrupted epoch's sample order, so a resumed run reaches
the same weights as an uninterrupted one.
"""

import dataclasses
import shutil
import time
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, gather_object, set_seed
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from hf_vssl.cli import MissingPathError, OutputDirTakenError, command_line
from hf_vssl.data.loader import build_view_dataloader, stage2_placement
from hf_vssl.data.sources import load_video_source, source_num_videos, split_source_for_process
from hf_vssl.evaluation.results import EvalResults, describe_views
from hf_vssl.evaluation.runner import evaluate_encoder, require_labels
from hf_vssl.methods import get_method

from .arguments import RUN_CONFIG, PretrainArguments, parse_arguments, save_arguments
from .collectives import all_processes_have_batch
from .release import save_release
from .speed import channels_last_clips, compile_model, to_channels_last
from .tracking import build_trackers

logger = get_logger(__name__)
# Clips per video of the validation during and after pretraining: the views that measure the card's numbers,
# saved as the checkpoint's video processor.
VALIDATION_CLIPS = 2


@dataclasses.dataclass
class LoopState:
    """The loop's own counters, saved with every checkpoint."""

    epoch: int = 0
    step_in_epoch: int = 0  # optimizer steps already taken in `epoch`
    global_step: int = 0
    # distinct bad videos met so far by any process (the same list on every process, gathered when it grows)
    bad_videos: list[str] = dataclasses.field(default_factory=list)
    checkpoint_step: int = -1  # global step of the newest checkpoint

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def build_model(args: PretrainArguments):
    """The method's pretraining model, from its table entry and the run's `model` values."""
    return get_method(args.method).build_pretraining_model(**args.model)


def build_method_recipe(args: PretrainArguments, config):
    """The method's view recipe, sized like the model unless the run's `recipe` values say otherwise."""
    return get_method(args.method).build_recipe(config, **args.recipe)


def prepare_output_dir(args: PretrainArguments, accelerator: Accelerator) -> Path:
    """Refuse a folder that holds another run, unless asked to resume it or to replace it (then it is emptied)."""
    output_dir = Path(args.output_dir)
    holds_run = (output_dir / RUN_CONFIG).exists() or (output_dir / "checkpoints").exists()
    if holds_run and args.resume_from_checkpoint is None:
        if not args.overwrite_output_dir:
            raise OutputDirTakenError(
                f"{output_dir} holds another run; pass --overwrite_output_dir to replace it or "
                f"--resume_from_checkpoint latest to continue it."
            )
        if accelerator.is_main_process:  # only what a run writes: never the user's other files
            for name in (RUN_CONFIG, "checkpoints", "logs", "final"):
                path = output_dir / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            for path in output_dir.glob("sample_keys_rank*.txt"):
                path.unlink()
        accelerator.wait_for_everyone()
    return output_dir


def latest_checkpoint(output_dir: Path) -> Path | None:
    checkpoints = sorted(
        (output_dir / "checkpoints").glob("checkpoint_*"), key=lambda p: int(p.name.split("_")[-1])
    )
    return checkpoints[-1] if checkpoints else None


# Checkpoints of a training loop (this one and fine-tuning's): accelerate `save_state` folders under
# `output_dir/checkpoints`, holding the loop's `LoopState` registered with `accelerator.register_for_checkpointing`.
def checkpoint_project(output_dir: Path, total_limit: int | None) -> ProjectConfiguration:
    """Accelerate's project settings for numbered checkpoints in ``output_dir/checkpoints`` and logs in
    ``output_dir/logs``, keeping the newest ``total_limit``."""
    return ProjectConfiguration(
        project_dir=str(output_dir),
        logging_dir=str(output_dir / "logs"),
        automatic_checkpoint_naming=True,
        total_limit=total_limit,
    )


def resume_from_checkpoint(accelerator: Accelerator, state: LoopState, output_dir: Path, which: str) -> Path:
    """Load a checkpoint (``"latest"`` or a folder) into the prepared objects and `state`; returns it."""
    checkpoint = latest_checkpoint(output_dir) if which == "latest" else Path(which)
    if checkpoint is None or not checkpoint.is_dir():
        raise MissingPathError(f"No checkpoint to resume from at {which} ({output_dir}/checkpoints).")
    accelerator.load_state(str(checkpoint))  # every process loads the main process's counters
    # The next save goes after every checkpoint there is (resuming from an older one must not overwrite).
    numbers = [int(p.name.split("_")[-1]) for p in (output_dir / "checkpoints").glob("checkpoint_*")]
    accelerator.project_configuration.iteration = max([*numbers, int(checkpoint.name.split("_")[-1])]) + 1
    logger.info(
        f"Resumed from {checkpoint} at epoch {state.epoch}, step {state.global_step}.", main_process_only=True
    )
    return checkpoint


def start_run(accelerator: Accelerator, args, output_dir: Path, tracker_project: str):
    """What every training loop does before its first step: register its counters with the checkpoints and resume
    them when asked, write the run config (before training, so that an interrupted run still says how it was
    started), open the trackers and the progress bar.

    Returns:
        ``(state, total_steps, progress)``: the loop's counters, ``args.max_steps`` (None: run the epochs) and the
        progress bar (at the resumed step).
    """
    state = LoopState()
    accelerator.register_for_checkpointing(state)
    if args.resume_from_checkpoint:
        resume_from_checkpoint(accelerator, state, output_dir, args.resume_from_checkpoint)
    output_dir.mkdir(parents=True, exist_ok=True)  # every process may write into it (sample keys)
    if accelerator.is_main_process:
        save_arguments(args, output_dir / RUN_CONFIG)
    accelerator.init_trackers(tracker_project, config={k: str(v) for k, v in args.to_dict().items()})
    total_steps = args.max_steps if args.max_steps > 0 else None
    progress = tqdm(
        total=total_steps,
        initial=state.global_step,
        disable=not accelerator.is_local_main_process,
        unit="step",
        dynamic_ncols=True,
    )
    return state, total_steps, progress


def save_loop_checkpoint(accelerator: Accelerator, state: LoopState) -> None:
    """Save a checkpoint at ``state.global_step`` (once per step)."""
    if state.checkpoint_step == state.global_step:
        return
    state.checkpoint_step = state.global_step
    accelerator.save_state()
    accelerator.wait_for_everyone()


def epoch_batches(loader, skip: int):
    """This epoch's batches, after the ``skip`` a resumed run already trained on.

    Starting the iterator leaves the global RNG alone (a DataLoader iterator draws its workers' base seed from it,
    and a resumed run starts one where the uninterrupted run did not), so that whatever a model draws from it
    after a resume (dropout, a shuffling batch norm's permutation) is what it drew in the uninterrupted run.
    """
    with torch.random.fork_rng(devices=[]):
        batches = iter(loader)
    for _ in range(skip):
        next(batches, None)
    return batches


def learning_rate_at(args: PretrainArguments, epoch: int) -> float:
    """Step schedule: the base rate times `lr_decay_factor` for every decay epoch already reached."""
    return args.learning_rate * args.lr_decay_factor ** sum(epoch >= e for e in args.lr_decay_epochs)


def build_optimizer(args: PretrainArguments, model):
    """The optimizer over every trainable parameter, all with `args.weight_decay` (as the authors' recipes)."""
    params = [p for p in model.parameters() if p.requires_grad]
    options = {"lr": args.learning_rate, "weight_decay": args.weight_decay}
    if args.optimizer == "sgd":
        return torch.optim.SGD(params, momentum=args.momentum, **options)
    optimizer_class = torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(params, **options)


def logged_metrics(model, output) -> dict[str, torch.Tensor]:
    """What the loop logs of a pretraining step, detached: every scalar field of the output (the loss terms, a
    ramp's current value) and whatever the model's optional ``training_metrics(output)`` hook adds (per-level
    values that the output holds as vectors)."""
    metrics = {
        name: value for name, value in output.items() if isinstance(value, torch.Tensor) and value.ndim == 0
    }
    if hasattr(model, "training_metrics"):
        metrics.update(model.training_metrics(output))
    return {name: value.detach().float() for name, value in metrics.items()}


def count_bad_videos(accelerator, met_in_epoch: set[str], known: set[str]) -> tuple[int, int]:
    """Distinct bad videos met in this epoch and in the whole run, over every process.

    In one epoch each video belongs to one process, so the epoch's count is a sum. From epoch to epoch a video may
    move to another process, so the run's names are gathered into ``known`` (the same set on every process),
    only when some process met one that is not known yet. Every process must call this at the same step.
    """
    new = sorted(met_in_epoch - known)
    counts = torch.tensor([float(len(met_in_epoch)), float(len(new))], device=accelerator.device)
    in_epoch, num_new = (int(value) for value in accelerator.reduce(counts, reduction="sum").tolist())
    if num_new:
        known.update(gather_object(new) if accelerator.num_processes > 1 else new)
    return in_epoch, len(known)


def train(args: PretrainArguments) -> Path:
    output_dir = Path(args.output_dir)
    project = checkpoint_project(output_dir, args.checkpoints_total_limit)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=build_trackers(args.report_to, output_dir / "logs", logger),
        project_config=project,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        # Queues are filled with keys gathered from every process, so they are identical without broadcasts.
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
    )
    prepare_output_dir(args, accelerator)
    set_seed(args.seed)

    model = build_model(args)
    recipe = build_method_recipe(args, model.config)
    if accelerator.device.type == "cuda" and accelerator.num_processes > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # Fast by default on CUDA: channels-last model and clips (same values), optionally compiled.
    channels_last = accelerator.device.type == "cuda" if args.channels_last is None else args.channels_last
    if channels_last:
        to_channels_last(model)
    optimizer = build_optimizer(args, model)
    if args.torch_compile:
        model = compile_model(model, args.torch_compile_backend)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)

    source = load_video_source(args.train_dir or args.dataset_name, split=args.dataset_split)
    num_videos = source_num_videos(source)  # known for a folder: the progress bar's first length
    if args.validation_dir:  # the kNN monitor needs labels on both sides: say so now, not after training
        require_labels(source, args.train_dir or args.dataset_name)
        require_labels(load_video_source(args.validation_dir, split="validation"), args.validation_dir)
    if args.shuffle_buffer_size > 0:
        # Same seed on every process; `set_epoch` reshuffles each epoch, reproducibly.
        source = source.shuffle(seed=args.seed, buffer_size=args.shuffle_buffer_size)
    # Split here, once; the DataLoader is not passed to accelerate.prepare, which would split it a second time.
    source = split_source_for_process(source, accelerator.process_index, accelerator.num_processes)
    placement = stage2_placement(accelerator.device)
    loader = build_view_dataloader(
        source,
        recipe,
        batch_size=args.per_device_train_batch_size,
        num_workers=args.dataloader_num_workers,
        seed=args.seed,
        placement=placement,
        return_keys=args.record_sample_keys,
        # Equal batches on every process: contrastive negatives are indexed by process rank.
        drop_last=True,
        persistent_workers=args.dataloader_persistent_workers,
        require_usable=False,  # decided below from every process, not from this one's share
    )

    state, total_steps, progress = start_run(accelerator, args, output_dir, "hf_vssl")
    # Where the source's size is known, the progress bar has an ETA from the start (an estimate: bad videos are
    # found while reading); the first finished epoch replaces it with the count.
    length_is_estimate = total_steps is None and num_videos is not None
    if length_is_estimate:
        videos_per_step = (
            args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
        )
        progress.total = max(1, num_videos // videos_per_step) * args.num_train_epochs
        progress.refresh()
    sample_keys = (
        open(output_dir / f"sample_keys_rank{accelerator.process_index}.txt", "a")
        if args.record_sample_keys
        else None
    )

    known_bad = set(state.bad_videos)
    batches = None  # the current epoch's pass over the loader

    def bad_video_counts() -> tuple[int, int]:
        return count_bad_videos(
            accelerator, set(batches.skipped) if batches is not None else set(), known_bad
        )

    def save_checkpoint():
        if state.checkpoint_step == state.global_step:
            return
        bad_video_counts()  # only the main process's counters are saved: give it every process's bad videos
        state.bad_videos = sorted(known_bad)
        save_loop_checkpoint(accelerator, state)

    # clips/s over each logging window (it spans epoch boundaries)
    window_start, window_clips = time.perf_counter(), 0
    finished = total_steps is not None and state.global_step >= total_steps  # a resume of a finished run
    while not finished and (total_steps is not None or state.epoch < args.num_train_epochs):
        epoch = state.epoch
        if hasattr(unwrapped, "set_epoch"):
            unwrapped.set_epoch(epoch)
        loader.dataset.set_epoch(epoch)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(args, epoch)
        # Accumulation windows start with the epoch, so that a checkpoint's steps are whole windows of this
        # epoch's batches; the incomplete window at the end of the previous epoch is dropped.
        accelerator.step = 0
        model.zero_grad(set_to_none=True)
        # Replay the steps this epoch already took before a resume: the same samples in the same order.
        replayed = state.step_in_epoch * args.gradient_accumulation_steps
        batches = epoch_batches(loader, replayed)
        batches_in_epoch = 0
        while True:
            batch = next(batches, None)
            if not all_processes_have_batch(accelerator, batch is not None):
                break
            batches_in_epoch += 1
            keys = batch.pop("keys", None)
            if sample_keys is not None and keys is not None:
                sample_keys.write("".join(f"{epoch}\t{key}\n" for key in keys))
            views = placement.finish(batch, recipe)
            views = channels_last_clips(views) if channels_last else views
            with accelerator.accumulate(model):
                output = model(**views)
                accelerator.backward(output.loss)
                if accelerator.sync_gradients and hasattr(unwrapped, "before_optimizer_step"):
                    unwrapped.before_optimizer_step()
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            window_clips += views["pixel_values"].shape[0]
            if not accelerator.sync_gradients:
                continue
            if hasattr(unwrapped, "after_optimizer_step"):
                unwrapped.after_optimizer_step()
            state.global_step += 1
            state.step_in_epoch += 1
            progress.update(1)
            if state.global_step % args.logging_steps == 0 or state.global_step == 1:
                elapsed = time.perf_counter() - window_start
                terms = {
                    k: accelerator.reduce(v, reduction="mean").item()
                    for k, v in logged_metrics(unwrapped, output).items()
                }
                bad_in_epoch, bad_in_run = bad_video_counts()
                record = {
                    **{f"train/{k}": v for k, v in terms.items()},
                    "train/lr": optimizer.param_groups[0]["lr"],
                    "train/epoch": epoch,
                    "train/clips_per_second": window_clips * accelerator.num_processes / max(elapsed, 1e-9),
                    "data/skipped_videos_epoch": bad_in_epoch,
                    "data/skipped_videos_total": bad_in_run,
                }
                accelerator.log(record, step=state.global_step)
                progress.set_postfix(
                    loss=f"{terms['loss']:.4f}", clips_s=f"{record['train/clips_per_second']:.1f}"
                )
                window_start, window_clips = time.perf_counter(), 0
            if state.global_step % args.checkpointing_steps == 0:
                save_checkpoint()
            if total_steps is not None and state.global_step >= total_steps:
                finished = True
                break
        if not finished and state.step_in_epoch == 0:
            # Without this a max_steps run over such a source would start empty epochs forever.
            if batches_in_epoch:
                raise RuntimeError(
                    f"Epoch {epoch} yielded {batches_in_epoch} batches per process, fewer than "
                    f"gradient_accumulation_steps={args.gradient_accumulation_steps}: no optimizer step."
                )
            # Decided from every process's share (a process, or one of its workers, may hold only bad files).
            counts = torch.tensor(
                [float(batches.num_videos), float(len(set(batches.skipped)))], device=accelerator.device
            )
            usable, bad = (int(value) for value in accelerator.reduce(counts, reduction="sum").tolist())
            if not usable:
                raise RuntimeError(
                    f"Epoch {epoch} yielded no batch: none of the {bad} videos read could be used, on any "
                    f"process; every one was skipped as bad (here: {dict(loader.skipped.by_reason)}). Check the "
                    f"data source and the recipe's requirements ({type(recipe).__name__} needs >= "
                    f"{recipe.min_num_frames} frames)."
                    if bad
                    else f"Epoch {epoch} yielded no batch: the training source is empty."
                )
            raise RuntimeError(
                f"Epoch {epoch} yielded no batch: the training source has fewer usable videos than "
                f"{args.per_device_train_batch_size} per process x {accelerator.num_processes} processes "
                f"({usable} usable and {bad} bad videos in this epoch, all processes together)."
            )
        if not finished:
            bad_in_epoch, bad_in_run = bad_video_counts()
            accelerator.log(
                {
                    "data/epoch": epoch,
                    "data/videos_in_epoch": (replayed + batches_in_epoch)
                    * args.per_device_train_batch_size
                    * accelerator.num_processes,
                    "data/skipped_videos_epoch": bad_in_epoch,
                    "data/skipped_videos_total": bad_in_run,
                },
                step=state.global_step,
            )
            if progress.total is None or length_is_estimate:  # an epoch has passed: its length is known now
                progress.total = state.step_in_epoch * args.num_train_epochs
                progress.refresh()
                length_is_estimate = False
            state.epoch += 1
            state.step_in_epoch = 0
        last_epoch = total_steps is None and state.epoch >= args.num_train_epochs
        if (
            args.validation_dir
            and not (finished or last_epoch)
            and state.epoch % args.knn_monitor_epochs == 0
        ):
            results = evaluate_on_validation(args, unwrapped, protocols=("knn",))
            accelerator.log({f"val/{k}": v for k, v in results.metrics().items()}, step=state.global_step)
        if total_steps is None and state.epoch >= args.num_train_epochs:
            finished = True

    if state.global_step == 0:
        raise RuntimeError("No training step was taken: the training source yielded no usable batch.")
    save_checkpoint()
    progress.close()
    if sample_keys is not None:
        sample_keys.close()
    results = None
    if args.validation_dir:
        results = evaluate_on_validation(args, unwrapped, protocols=("knn", "retrieval"))
        accelerator.log({f"val/{k}": v for k, v in results.metrics().items()}, step=state.global_step)
    if accelerator.is_main_process:
        save_release(
            unwrapped.base_model,
            output_dir,
            args,
            results,
            dataset_name=args.dataset_name or args.train_dir,
            evaluation_views={"num_clips": VALIDATION_CLIPS},
        )
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return output_dir / "final"


def evaluate_on_validation(args, model, protocols, num_clips: int = VALIDATION_CLIPS) -> EvalResults:
    """The encoder's kNN / retrieval results on the labelled validation source, the training source as memory
    (every process encodes its share of the videos; every process gets the records)."""
    metrics = evaluate_encoder(
        model.base_model,
        args.train_dir or args.dataset_name,
        args.validation_dir,
        protocols=protocols,
        num_frames=model.config.num_frames,
        image_size=model.config.image_size,
        num_clips=num_clips,
        batch_size=args.per_device_train_batch_size,
        num_workers=args.dataloader_num_workers,
        train_split=args.dataset_split,
    )
    model.train()
    return EvalResults.from_metrics(
        metrics,
        dataset=args.validation_dir,
        split="validation",
        measured_with=describe_views(num_clips, "center"),
    )


@command_line
def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(
        argv, PretrainArguments, description="Self-supervised pretraining of an hf_vssl method."
    )
    with logging_redirect_tqdm():  # warnings print above the progress bar, not on its line
        train(args)


if __name__ == "__main__":
    main()
