"""Convert a checkpoint of the MLFO authors' code into hf_vssl folders.

The authors save the plain ``state_dict`` of their model: the backbone under ``backbone.`` (Hara-layout R3D with
``conv1``/``bn1``/``layerN``, an unused ``fc``, and the motion-excitation blocks ``melow``/``memid``), the
time-pointwise heads ``project{,_fine,_graph}``, ``project_{mid,low}{,_fine,_graph}``, the global head
``project_global`` and ``prototype``. This writes the encoder as an ``MLFOModel`` folder, and, when the heads are in
the checkpoint, the whole ``MLFOForPreTraining`` into ``OUT/pretraining``. Widths, depths and the number of
prototypes are read from the tensors, so nothing has to be passed by hand.

Usage: python -m hf_vssl.convert_mlfo_original CKPT OUT [--num_frames 16] [--image_size 112]
"""

import re
from pathlib import Path

import torch

from .cli import CommandLineParser, command_line
from .configuration_mlfo import MLFOConfig
from .modeling_mlfo import MLFOForPreTraining, MLFOModel

# (pattern on the authors' key, replacement in MLFOForPreTraining)
_RULES: list[tuple[str, str]] = [
    (r"^backbone\.conv1\.", "mlfo.backbone.stem.conv."),
    (r"^backbone\.bn1\.", "mlfo.backbone.stem.norm."),
    (r"^backbone\.layer(\d)\.(\d+)\.conv([12])\.", "mlfo.backbone.stages.{stage}.\\2.conv\\3."),
    (r"^backbone\.layer(\d)\.(\d+)\.bn([12])\.", "mlfo.backbone.stages.{stage}.\\2.norm\\3."),
    (r"^backbone\.layer(\d)\.(\d+)\.downsample\.0\.", "mlfo.backbone.stages.{stage}.\\2.shortcut.conv."),
    (r"^backbone\.layer(\d)\.(\d+)\.downsample\.1\.", "mlfo.backbone.stages.{stage}.\\2.shortcut.norm."),
    (r"^backbone\.melow\.0\.", "motion_excitation.low."),
    (r"^backbone\.memid\.0\.", "motion_excitation.mid."),
    (r"^project\.", "projections.high.instance."),
    (r"^project_fine\.", "projections.high.timestamp."),
    (r"^project_graph\.", "projections.high.graph."),
    (r"^project_(mid|low)\.", "projections.\\1.instance."),
    (r"^project_(mid|low)_fine\.", "projections.\\1.timestamp."),
    (r"^project_(mid|low)_graph\.", "projections.\\1.graph."),
    (r"^project_global\.", "global_head."),
    (r"^prototype\.", "prototypes."),
]
_DROPPED = re.compile(r"^backbone\.fc\.")


def convert_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the authors' keys to ``MLFOForPreTraining`` keys; every key must map (``backbone.fc`` is dropped)."""
    converted = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if _DROPPED.match(key):
            continue
        for pattern, replacement in _RULES:
            match = re.match(pattern, key)
            if match:
                if "{stage}" in replacement:
                    replacement = replacement.replace("{stage}", str(int(match.group(1)) - 1))
                converted[match.expand(replacement) + key[match.end() :]] = value
                break
        else:
            raise KeyError(f"{key!r} is not a key of the MLFO authors' model; is this an MLFO checkpoint?")
    return converted


def config_from_state_dict(state_dict: dict[str, torch.Tensor], **overrides) -> MLFOConfig:
    """The ``MLFOConfig`` whose shapes match a converted state dict (widths, depths, heads present, K)."""
    stem = state_dict["mlfo.backbone.stem.conv.weight"]
    hidden_sizes, depths = [], []
    for stage in range(4):
        blocks = {int(k.split(".")[4]) for k in state_dict if k.startswith(f"mlfo.backbone.stages.{stage}.")}
        depths.append(len(blocks))
        hidden_sizes.append(state_dict[f"mlfo.backbone.stages.{stage}.0.conv1.weight"].shape[0])
    has = {
        use: any(f".{use}." in k for k in state_dict if k.startswith("projections."))
        for use in ("timestamp", "graph")
    }
    prototypes = state_dict.get("prototypes.weight")
    kwargs = dict(
        backbone="r3d_hara",
        num_channels=stem.shape[1],
        embedding_size=stem.shape[0],
        hidden_sizes=hidden_sizes,
        depths=depths,
        use_motion_contrast=any(k.startswith("projections.mid.instance.") for k in state_dict),
        use_timestamp_alignment=has["timestamp"],
        use_graph=has["graph"],
        use_prototypes=prototypes is not None,
    )
    if prototypes is not None:
        kwargs["num_prototypes"] = prototypes.shape[0]
        kwargs["projection_dim"] = prototypes.shape[1]
    if "motion_excitation.low.conv1.weight" in state_dict:
        low = state_dict["motion_excitation.low.conv1.weight"]
        kwargs["motion_excitation_reduction"] = low.shape[1] // low.shape[0]
    return MLFOConfig(**{**kwargs, **overrides})


def load_original_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an authors' checkpoint safely (``weights_only=True``); accepts a bare state dict or ``{"state_dict": ...}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors.")
    return checkpoint


def convert_checkpoint(
    path: str | Path, output_dir: str | Path, **config_overrides
) -> tuple[MLFOModel, MLFOForPreTraining | None]:
    """Convert ``path``: write ``output_dir`` (``MLFOModel``) and, when it has heads, ``output_dir/pretraining``.

    Returns the encoder and the pretraining model (``None`` for a backbone-only checkpoint).
    """
    state_dict = convert_state_dict(load_original_checkpoint(path))
    config = config_from_state_dict(state_dict, **config_overrides)
    output_dir = Path(output_dir)
    if not any(not key.startswith("mlfo.") for key in state_dict):
        encoder = MLFOModel(config)
        encoder.load_state_dict({key.removeprefix("mlfo."): value for key, value in state_dict.items()})
        encoder.save_pretrained(output_dir)
        return encoder, None
    model = MLFOForPreTraining(config)
    # The logit queue is training state the authors keep outside the model: it starts empty.
    expected = {key for key in model.state_dict() if not key.startswith("logit_queue.")}
    missing, unexpected = expected - set(state_dict), set(state_dict) - expected
    if missing or unexpected:
        raise ValueError(
            f"Checkpoint does not match the MLFO architecture: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}."
        )
    model.load_state_dict(state_dict, strict=False)
    model.mlfo.save_pretrained(output_dir)
    model.save_pretrained(output_dir / "pretraining")
    return model.mlfo, model


@command_line
def main(argv: list[str] | None = None) -> None:
    parser = CommandLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="the authors' .pth file")
    parser.add_argument("output_dir", help="folder for the MLFOModel (heads go to OUTPUT_DIR/pretraining)")
    parser.add_argument(
        "--num_frames", "--num-frames", type=int, default=16, help="clip length of the config"
    )
    parser.add_argument("--image_size", "--image-size", type=int, default=112, help="crop size of the config")
    args = parser.parse_args(argv)
    _, pretraining = convert_checkpoint(
        args.checkpoint, args.output_dir, num_frames=args.num_frames, image_size=args.image_size
    )
    heads = f" and the pretraining model to {Path(args.output_dir) / 'pretraining'}" if pretraining else ""
    print(f"Wrote the MLFO encoder to {args.output_dir}{heads}.")


if __name__ == "__main__":
    main()
