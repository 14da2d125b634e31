"""Evaluate a pretrained encoder with the field's protocols (linear probe, kNN, retrieval Recall@k).

    python training/evaluate.py --model_name_or_path runs/mlfo/final --train_dir data/train \
        --validation_dir data/validation --protocols linear_probe knn retrieval --output_json results.json

Features are the encoder's pooled stage-4 output, averaged over ``num_clips`` uniformly spaced clips (and the
spatial crops) of each video: the views of the checkpoint's saved video processor (the one its pipelines use),
or the default processor for its clip size; ``--num_clips`` / ``--spatial_crops`` override them.
``--compare_random_init`` also evaluates the same architecture at random initialisation, the baseline any
pretraining has to beat. With ``accelerate launch`` every process encodes its share of the videos; the results
are those of one process.

``--output_json`` receives the checkpoint's results (`hf_vssl.evaluation.results.EvalResults`), which
``python -m hf_vssl.hub card DIR --results FILE`` puts on its model card; the random-initialisation baseline goes
next to it, ``<name>.random_init.json``.
"""

from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import AutoConfig, AutoModel

from hf_vssl.cli import command_line
from hf_vssl.evaluation.results import EvalResults, describe_views
from hf_vssl.evaluation.runner import evaluate_encoder, evaluation_processor, format_results_table
from hf_vssl.evaluation.suite import PROTOCOLS
from hf_vssl.video_processing_vssl import VideoSSLVideoProcessor

from .arguments import check_local_path, check_model_path, parse_arguments


@dataclass
class EvaluateArguments:
    """What an evaluation reads.

    Args:
        model_name_or_path: the checkpoint: a folder written by the training scripts or a Hub model id.
        train_dir: labelled videos the protocols fit on (the kNN bank, the linear probe, the retrieval gallery).
        validation_dir: labelled videos the protocols are measured on.
        protocols: any of linear_probe, knn, retrieval.
        output_json: write the checkpoint's results here (and the random initialisation's next to it).
        dataset: how the results name the validation data (a Hub dataset id where there is one; default:
            `validation_dir`).
        num_clips: clips per video whose features are averaged (default: the checkpoint's video processor's).
        spatial_crops: center, three or ten crops per clip (default: the checkpoint's video processor's).
        per_device_eval_batch_size: batch size of the feature extraction.
        dataloader_num_workers: DataLoader worker processes that decode videos.
        compare_random_init: also evaluate the same architecture at random initialisation, the baseline.
        trust_remote_code: load a checkpoint's own code (needed for a Hub checkpoint when hf_vssl does not
            know its model type).
        seed: seed of the random initialisation (`compare_random_init`).
        device: torch device (default: cuda when available, else cpu).
    """

    model_name_or_path: str | None = None
    train_dir: str | None = None
    validation_dir: str | None = None
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS))
    output_json: str | None = None
    # how the results name the validation data (a Hub dataset id where there is one); default: validation_dir
    dataset: str | None = None
    num_clips: int | None = None  # None: the checkpoint's video processor's
    spatial_crops: str | None = None
    per_device_eval_batch_size: int = 8
    dataloader_num_workers: int = 2
    compare_random_init: bool = False
    trust_remote_code: bool = False
    seed: int = 0
    device: str | None = None

    def validate(self) -> None:
        for name in ("model_name_or_path", "train_dir", "validation_dir"):
            if not getattr(self, name):
                raise ValueError(f"`--{name}` is required.")
        for name in ("train_dir", "validation_dir"):
            check_local_path(name, getattr(self, name))
        check_model_path("model_name_or_path", self.model_name_or_path)
        unknown = sorted(set(self.protocols) - set(PROTOCOLS))
        if unknown:
            raise ValueError(f"Unknown protocol(s) {unknown}; choose from {list(PROTOCOLS)}.")

    def to_dict(self):
        return dict(vars(self))


def load_encoder(
    model_name_or_path: str, trust_remote_code: bool = False, random_init: bool = False, seed: int = 0
):
    """The encoder of any hf_vssl checkpoint (encoder, classifier or pretraining folder), or its random init."""
    if random_init:
        config = AutoConfig.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
        torch.manual_seed(seed)
        return AutoModel.from_config(config, trust_remote_code=trust_remote_code)
    return AutoModel.from_pretrained(
        model_name_or_path, trust_remote_code=trust_remote_code, dtype=torch.float32
    )


def load_evaluation_processor(
    model_name_or_path: str, config, num_clips: int | None = None, spatial_crops: str | None = None
) -> VideoSSLVideoProcessor:
    """The checkpoint's video processor (the views that measured its card), or the default one for its clip
    size when it has none; ``num_clips`` / ``spatial_crops`` override it."""
    overrides = {
        k: v for k, v in {"num_clips": num_clips, "spatial_crops": spatial_crops}.items() if v is not None
    }
    try:
        return VideoSSLVideoProcessor.from_pretrained(model_name_or_path, **overrides)
    except OSError:  # no video_preprocessor_config.json
        return evaluation_processor(config.num_frames, config.image_size, num_clips, spatial_crops)


def evaluate(args: EvaluateArguments) -> dict[str, EvalResults]:
    """The results of the checkpoint ("pretrained") and, if asked, of its random initialisation ("random init")."""
    # Under `accelerate launch` this joins the processes: each encodes its share of the videos (evaluate_encoder).
    state = PartialState()
    device = torch.device(args.device) if args.device else state.device
    variants = {"pretrained": False, **({"random init": True} if args.compare_random_init else {})}
    results = {}
    processor = None
    for name, random_init in variants.items():
        encoder = (
            load_encoder(args.model_name_or_path, args.trust_remote_code, random_init, args.seed)
            .to(device)
            .eval()
        )
        if processor is None:
            processor = load_evaluation_processor(
                args.model_name_or_path, encoder.config, args.num_clips, args.spatial_crops
            )
        metrics = evaluate_encoder(
            encoder,
            args.train_dir,
            args.validation_dir,
            protocols=tuple(args.protocols),
            processor=processor,
            batch_size=args.per_device_eval_batch_size,
            num_workers=args.dataloader_num_workers,
        )
        results[name] = EvalResults.from_metrics(
            metrics,
            dataset=args.dataset or args.validation_dir,
            split="validation",
            measured_with=describe_views(processor.num_clips, processor.spatial_crops),
        )
    if not state.is_main_process:
        return results
    print(format_results_table({name: r.metrics() for name, r in results.items()}))
    if args.output_json:
        output = Path(args.output_json)
        results["pretrained"].save(output)
        if "random init" in results:
            results["random init"].save(output.with_suffix(".random_init.json"))
    return results


@command_line
def main(argv: list[str] | None = None) -> dict:
    args = parse_arguments(argv, EvaluateArguments, description=__doc__.split("\n\n")[0])
    return evaluate(args)


if __name__ == "__main__":
    main()
