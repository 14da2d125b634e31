"""The end of every training script: a Hub-ready folder with the model, its processors, its run and its card."""

from pathlib import Path

import hf_vssl
from hf_vssl.evaluation.results import EvalResults
from hf_vssl.hub import push_folder, write_model_card

from .arguments import RUN_CONFIG, save_arguments

RESULTS_FILE = "results.json"


def save_processors(config, directory: Path) -> None:
    """The video and image processors matching a model's clip geometry (short side 128/112 of the crop)."""
    short_side = round(config.image_size * 128 / 112)
    hf_vssl.VideoSSLVideoProcessor(
        num_frames=config.num_frames, size={"shortest_edge": short_side}, crop_size=config.image_size
    ).save_pretrained(directory)
    hf_vssl.VideoSSLImageProcessor(
        size={"shortest_edge": short_side}, crop_size=config.image_size
    ).save_pretrained(directory)


def save_release(
    model,
    output_dir: str | Path,
    args,
    results: EvalResults | None = None,
    *,
    dataset_name: str | None = None,
    base_model: str | None = None,
) -> Path:
    """Write ``output_dir/final`` and, with ``args.push_to_hub``, push it to ``args.hub_model_id``.

    The folder holds `model` (`save_pretrained`: weights and remote code), the processors for its clip size, the
    run's resolved arguments (`run_config.yaml`) and a model card showing `results`, which also go to
    ``output_dir/results.json`` so the card can be rendered again (``python -m hf_vssl.hub card``).

    Args:
        model: what the checkpoint releases: the encoder after pretraining, the classifier after fine-tuning.
        args: the run's arguments (`to_dict()`, `hub_model_id`, `push_to_hub`).
        results: the numbers measured at the end of the run; None gives a "not evaluated" card.
        dataset_name: the training data, as the card names it.
        base_model: Hub id of the checkpoint this one was trained from.

    Returns:
        the folder, ``output_dir/final``.
    """
    output_dir = Path(output_dir)
    final_dir = output_dir / "final"
    model.save_pretrained(final_dir)
    save_processors(model.config, final_dir)
    save_arguments(args, final_dir / RUN_CONFIG)
    if results is not None:
        results.save(output_dir / RESULTS_FILE)
    write_model_card(
        final_dir,
        model_id=args.hub_model_id or output_dir.name,
        train_config=args.to_dict(),
        eval_results=results,
        dataset_name=dataset_name,
        base_model=base_model,
    )
    if args.push_to_hub:
        push_folder(final_dir, args.hub_model_id)
    return final_dir
