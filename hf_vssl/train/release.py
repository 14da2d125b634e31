"""The end of every training script: a Hub-ready folder with the model, its processors, its run and its card."""

from pathlib import Path

import hf_vssl
from hf_vssl.evaluation.results import EvalResults
from hf_vssl.evaluation.runner import evaluation_processor
from hf_vssl.hub import push_folder, write_model_card
from hf_vssl.image_processing_vssl import VideoSSLImagesKwargs
from hf_vssl.video_processing_vssl import VideoSSLVideoProcessor

from .arguments import RUN_CONFIG, save_arguments

RESULTS_FILE = "results.json"


def save_processors(config, directory: Path, **evaluation_views) -> VideoSSLVideoProcessor:
    """The video processor of the evaluation views (``num_clips``, ``spatial_crops``) for the model's clip size,
    and the image processor with its transform; returns the video processor."""
    video_processor = evaluation_processor(config.num_frames, config.image_size, **evaluation_views)
    video_processor.save_pretrained(directory)
    hf_vssl.VideoSSLImageProcessor(
        **{name: getattr(video_processor, name) for name in VideoSSLImagesKwargs.__annotations__}
    ).save_pretrained(directory)
    return video_processor


def save_release(
    model,
    output_dir: str | Path,
    args,
    results: EvalResults | None = None,
    *,
    dataset_name: str | None = None,
    base_model: str | None = None,
    evaluation_views: dict | None = None,
    model_id: str | None = None,
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
        evaluation_views: the views `results` were measured with (``num_clips``, ``spatial_crops``): the saved
            video processor makes them, so that the pipelines see what measured the card.
        model_id: the name the card gives the model when `args.hub_model_id` is not set (default: the output
            folder's name).

    Returns:
        the folder, ``output_dir/final``.
    """
    output_dir = Path(output_dir)
    final_dir = output_dir / "final"
    model.save_pretrained(final_dir)
    save_processors(model.config, final_dir, **(evaluation_views or {}))
    save_arguments(args, final_dir / RUN_CONFIG)
    if results is not None:
        results.save(output_dir / RESULTS_FILE)
    write_model_card(
        final_dir,
        model_id=args.hub_model_id or model_id or output_dir.name,
        train_config=args.to_dict(),
        eval_results=results,
        dataset_name=dataset_name,
        base_model=base_model,
    )
    if args.push_to_hub:
        push_folder(final_dir, args.hub_model_id)
    return final_dir
