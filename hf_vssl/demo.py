"""`make demo`: the whole journey on a laptop CPU in a few minutes.

1. writes the built-in synthetic motion videos (real h264 files; cached after the first run);
2. pretrains a tiny model of the chosen method on them (the method's "demo" config, e.g.
   `training/configs/mlfo_tiny_demo.yaml`) with the accelerate loop;
3. evaluates the pretrained encoder and the same encoder at random initialisation (linear probe, kNN, retrieval);
4. writes a Hub-ready folder (weights, remote code, processors, model card with the measured results) and prints
   the two lines that load it.

    python -m hf_vssl.demo [--method mlfo] [--output_dir runs/demo/mlfo] [--epochs N] [--seed S] [--key value ...]

Options the demo does not know are training overrides (`--model.use_graph false`), as for `training/pretrain.py`.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from hf_vssl.data.synthetic import write_synthetic_videos
from hf_vssl.evaluation.runner import evaluate_encoder, format_results_table
from hf_vssl.evaluation.suite import nest_results
from hf_vssl.hub import write_model_card
from hf_vssl.methods import METHODS, get_method
from hf_vssl.train.arguments import PretrainArguments, parse_arguments
from hf_vssl.train.evaluate import load_encoder
from hf_vssl.train.pretrain import train


def write_demo_data(root: Path) -> tuple[Path, Path]:
    """Synthetic train and validation sets: 8 motion classes, different seeds so no video is shared."""
    train_dir, validation_dir = root / "train", root / "validation"
    write_synthetic_videos(train_dir, num_per_class=24, seed=0)
    write_synthetic_videos(validation_dir, num_per_class=12, seed=1)
    return train_dir, validation_dir


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--method", default="mlfo", choices=[m for m in METHODS if "demo" in METHODS[m].configs]
    )
    parser.add_argument("--output_dir", default=None, help="default: runs/demo/<method>")
    parser.add_argument("--data_dir", default=".cache/demo-data")
    parser.add_argument("--epochs", type=int, default=None, help="override the demo config's epochs")
    parser.add_argument("--seed", type=int, default=None, help="override the demo config's seed")
    options, training_overrides = parser.parse_known_args(argv)
    spec = get_method(options.method)
    output_dir = options.output_dir or f"runs/demo/{spec.name}"
    started = time.perf_counter()

    print("1/4 synthetic motion videos ...", flush=True)
    train_dir, validation_dir = write_demo_data(Path(options.data_dir))

    print(f"2/4 pretraining a tiny {spec.card.display_name} on CPU ...", flush=True)
    overrides = ["--train_dir", str(train_dir), "--output_dir", output_dir, "--overwrite_output_dir"]
    if options.epochs is not None:
        overrides += ["--num_train_epochs", str(options.epochs)]
    if options.seed is not None:
        overrides += ["--seed", str(options.seed)]
    config_file = spec.config_file("demo")
    args: PretrainArguments = parse_arguments(["--config", str(config_file), *overrides, *training_overrides])
    final_dir = train(args)

    print(
        "3/4 evaluating the pretrained encoder and the same encoder at random initialisation ...", flush=True
    )
    results = {}
    pretrained = f"{spec.card.display_name} pretrained"
    for name, random_init in ((pretrained, False), ("random init", True)):
        encoder = load_encoder(str(final_dir), random_init=random_init, seed=args.seed).eval()
        with torch.no_grad():
            results[name] = evaluate_encoder(
                encoder,
                str(train_dir),
                str(validation_dir),
                num_frames=encoder.config.num_frames,
                image_size=encoder.config.image_size,
                num_clips=2,
                batch_size=16,
                num_workers=2,
            )
    table = format_results_table(results)

    print("4/4 writing the Hub-ready folder ...", flush=True)
    eval_results = {
        "dataset": "hf_vssl synthetic motion (validation)",
        "split": "validation",
        **nest_results(results[pretrained]),
    }
    write_model_card(
        final_dir,
        model_id=f"{spec.name}-tiny-synthetic-demo",
        train_config=json.loads(json.dumps(args.to_dict())),
        eval_results=eval_results,
        dataset_name="hf_vssl synthetic motion videos",
    )
    (Path(output_dir) / "demo_results.json").write_text(json.dumps(results, indent=2))

    minutes = (time.perf_counter() - started) / 60
    print(f"\nValidation results (8 motion classes, chance = 12.5%), {minutes:.1f} min in all:\n\n{table}\n")
    print(
        f"Hub-ready folder: {final_dir}  (push it with: python -m hf_vssl.hub push {final_dir} <user>/<repo>)"
    )
    print("Load it:\n")
    print("    from transformers import AutoModel")
    print(f'    model = AutoModel.from_pretrained("{final_dir}", trust_remote_code=True)')
    return results


if __name__ == "__main__":
    main()
