"""`make demo`: the whole journey on a laptop CPU in a few minutes.

1. writes the built-in synthetic motion videos (real h264 files; cached after the first run);
2. pretrains a tiny model of the chosen method on them (the method's "demo" config, e.g. the packaged
   `hf_vssl/configs/mlfo_tiny_demo.yaml`) with the accelerate loop;
3. evaluates the pretrained encoder and the same encoder at random initialisation (linear probe, kNN, retrieval);
4. writes the results as `training/evaluate.py` does (`results.json` in the record format of
   `hf_vssl.evaluation.results`, the baseline's in `results.random_init.json`), renders the model card of the
   Hub-ready folder (weights, remote code, processors) from that file, and prints the two lines that load it.

    hf-vssl-demo [--method mlfo] [--output_dir runs/demo/mlfo] [--epochs N] [--seed S] [--key value ...]

(or `python -m hf_vssl.demo ...`). Options the demo does not know are training overrides
(`--model.use_graph false`), as for `hf-vssl-pretrain`; `hf-vssl-pretrain --help` lists them.
"""

import time
from pathlib import Path

from hf_vssl.cli import CommandLineParser, command_line
from hf_vssl.data.synthetic import write_synthetic_videos
from hf_vssl.evaluation.results import EvalResults
from hf_vssl.evaluation.suite import format_results_table
from hf_vssl.hub import write_model_card
from hf_vssl.methods import METHODS, get_method
from hf_vssl.train.arguments import PretrainArguments, parse_arguments
from hf_vssl.train.evaluate import EvaluateArguments, evaluate
from hf_vssl.train.pretrain import train


def write_demo_data(root: Path, videos_per_class: int = 24) -> tuple[Path, Path]:
    """Synthetic train and validation sets: 8 motion classes, different seeds so no video is shared; the
    validation set has half as many videos per class as the training set."""
    train_dir, validation_dir = root / "train", root / "validation"
    write_synthetic_videos(train_dir, num_per_class=videos_per_class, seed=0)
    write_synthetic_videos(validation_dir, num_per_class=max(1, videos_per_class // 2), seed=1)
    return train_dir, validation_dir


@command_line
def main(argv: list[str] | None = None) -> dict[str, EvalResults]:
    parser = CommandLineParser(
        description=__doc__.split("\n\n")[0],
        epilog="Other options are training overrides, as for hf-vssl-pretrain (see its --help).",
    )
    parser.add_argument(
        "--method",
        default="mlfo",
        choices=[m for m in METHODS if "demo" in METHODS[m].configs],
        help="the method whose packaged demo config runs",
    )
    parser.add_argument("--output_dir", default=None, help="default: runs/demo/<method>")
    parser.add_argument(
        "--data_dir", default=".cache/demo-data", help="where the synthetic videos are cached"
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the demo config's epochs")
    parser.add_argument("--seed", type=int, default=None, help="override the demo config's seed")
    parser.add_argument(
        "--videos_per_class",
        type=int,
        default=24,
        help="training videos per class (validation: half as many)",
    )
    options, training_overrides = parser.parse_known_args(argv)
    spec = get_method(options.method)
    output_dir = options.output_dir or f"runs/demo/{spec.name}"
    started = time.perf_counter()

    train_dir = Path(options.data_dir) / "train"
    train_dir.mkdir(parents=True, exist_ok=True)  # the run arguments are checked before the videos are made
    overrides = ["--train_dir", str(train_dir), "--output_dir", output_dir, "--overwrite_output_dir"]
    if options.epochs is not None:
        overrides += ["--num_train_epochs", str(options.epochs)]
    if options.seed is not None:
        overrides += ["--seed", str(options.seed)]
    config_file = spec.config_file("demo")
    args: PretrainArguments = parse_arguments(["--config", str(config_file), *overrides, *training_overrides])

    print("1/4 synthetic motion videos ...", flush=True)
    train_dir, validation_dir = write_demo_data(Path(options.data_dir), options.videos_per_class)

    print(f"2/4 pretraining a tiny {spec.card.display_name} on CPU ...", flush=True)
    final_dir = train(args)

    print(
        "3/4 evaluating the pretrained encoder and the same encoder at random initialisation ...", flush=True
    )
    results_file = Path(output_dir) / "results.json"
    results = evaluate(
        EvaluateArguments(
            model_name_or_path=str(final_dir),
            train_dir=str(train_dir),
            validation_dir=str(validation_dir),
            dataset="hf_vssl synthetic motion",
            output_json=str(results_file),
            num_clips=2,
            per_device_eval_batch_size=16,
            compare_random_init=True,
            seed=args.seed,
        )
    )
    table = format_results_table({name: r.metrics() for name, r in results.items()})

    print("4/4 writing the model card from the results file ...", flush=True)
    write_model_card(
        final_dir,
        model_id=f"{spec.name}-tiny-synthetic-demo",
        train_config=args.to_dict(),
        eval_results=EvalResults.load(results_file),
        dataset_name="hf_vssl synthetic motion videos",
    )

    minutes = (time.perf_counter() - started) / 60
    print(f"\nValidation results (8 motion classes, chance = 12.5%), {minutes:.1f} min in all:\n\n{table}\n")
    print(f"Hub-ready folder: {final_dir}  (push it with: hf-vssl-hub push {final_dir} <user>/<repo>)")
    print("Load it:\n")
    print("    from transformers import AutoModel")
    print(f'    model = AutoModel.from_pretrained("{final_dir}", trust_remote_code=True)')
    return results


if __name__ == "__main__":
    main()
