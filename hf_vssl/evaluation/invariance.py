"""Which cues a frozen encoder matches: cosine similarity between the views of a pretraining recipe.

A pretraining recipe's views of one video share some cues and differ in others (HDC's spatial positive shares the
anchor's crop and colour, its temporal positive the anchor's frames). Comparing how similar an encoder finds the
views of the *same* video with how similar it finds views of *other* videos shows which shared cue it has learned
to match; comparing a clip with the same clip played backwards shows whether it sees the direction of motion.

Usage::

    python -m hf_vssl.evaluation.invariance --model runs/demo/hdc/final --data .cache/demo-data/train \\
        --recipe '{"flip_prob": 0.0}'

prints one row per pair of views (and per view against its time reversal): the mean cosine over the same video,
over pairs of different videos, and their gap. Features are the encoder's pooled output (stage 4, globally
averaged), L2-normalised.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..cli import CommandLineParser, UsageError, command_line
from .features import encode_clips

__all__ = ["REVERSED", "format_similarity_table", "view_similarity"]

REVERSED = "reversed"  # the name of the time-reversed copy of a view in the pairs of `view_similarity`


@torch.no_grad()
def view_similarity(
    model: nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    view_names: Sequence[str],
    *,
    reverse_time: bool = True,
    max_videos: int | None = None,
) -> dict[tuple[str, str], dict[str, float]]:
    """Mean cosine between the encoder's features of the views of a recipe, within and across videos.

    Args:
        model: encoder called as ``model(pixel_values=[N, T, C, H, W])`` with a pooled output (`pooled_output`).
        batches: dicts with ``pixel_values`` ``[B, V, T, C, H, W]``, the ``V`` views of each of ``B`` videos (a
            pretraining recipe's batches after stage 2).
        view_names: the ``V`` names, in order (``recipe.view_names``).
        reverse_time: also compare each view with itself played backwards (frame order reversed).
        max_videos: stop after this many videos (``None``: every batch).

    Returns:
        ``{(view_a, view_b): {"same_video": s, "other_videos": o, "gap": s - o}}`` for every pair ``a < b`` of
        views, and with ``reverse_time`` ``{(view, REVERSED): ...}`` for every view, where ``s`` is the mean over
        videos ``i`` of ``cos(f_a(i), f_b(i))`` and ``o`` the mean over pairs ``i != j`` of the same batch of
        ``cos(f_a(i), f_b(j))``. Batches of one video add to ``same_video`` only.
    """
    model.eval()
    device = next(model.parameters()).device
    pairs = list(itertools.combinations(range(len(view_names)), 2))
    names = [(view_names[a], view_names[b]) for a, b in pairs]
    if reverse_time:
        names += [(name, REVERSED) for name in view_names]
    if max_videos is not None and max_videos < 1:
        raise ValueError(f"max_videos must be >= 1 or None, got {max_videos}.")
    # per pair: sum and count of same-video cosines, sum and count of other-video cosines
    sums = {name: torch.zeros(4, dtype=torch.float64) for name in names}
    seen = 0
    for batch in batches:
        pixel_values = batch["pixel_values"]
        if pixel_values.ndim != 6 or pixel_values.shape[1] != len(view_names):
            raise ValueError(
                f"pixel_values must be [batch, {len(view_names)} views ({', '.join(view_names)}), frames, channels, "
                f"height, width], got shape {tuple(pixel_values.shape)}."
            )
        if max_videos is not None:
            pixel_values = pixel_values[: max_videos - seen]
        pixel_values = pixel_values.to(device)
        features = F.normalize(encode_clips(model, pixel_values).double(), dim=-1)  # [B, V, D]
        compared = [(features[:, a], features[:, b]) for a, b in pairs]
        if reverse_time:
            reversed_features = F.normalize(encode_clips(model, pixel_values.flip(2)).double(), dim=-1)
            compared += list(zip(features.unbind(1), reversed_features.unbind(1)))
        for name, (left, right) in zip(names, compared):
            cosines = left @ right.T  # [B, B]: videos of the left view against videos of the right view
            count, same = cosines.shape[0], cosines.diagonal().sum().item()
            other = cosines.sum().item() - same
            sums[name] += torch.tensor([same, count, other, count * (count - 1)], dtype=torch.float64)
        seen += pixel_values.shape[0]
        if max_videos is not None and seen >= max_videos:
            break
    if seen == 0:
        raise ValueError("view_similarity got no video: the batches were empty.")
    results = {}
    for name, (same, same_count, other, other_count) in sums.items():
        same_mean = float(same / same_count)
        other_mean = float(other / other_count) if other_count else float("nan")
        results[name] = {"same_video": same_mean, "other_videos": other_mean, "gap": same_mean - other_mean}
    return results


def format_similarity_table(results: Mapping[tuple[str, str], Mapping[str, float]]) -> str:
    """A Markdown table of `view_similarity`'s results, one row per pair."""
    lines = ["| views | same video | other videos | gap |", "|---|---:|---:|---:|"]
    for (left, right), row in results.items():
        lines.append(
            f"| {left} ~ {right} | {row['same_video']:.3f} | {row['other_videos']:.3f} | {row['gap']:+.3f} |"
        )
    return "\n".join(lines)


@command_line
def main(argv: Sequence[str] | None = None) -> dict:
    import yaml

    from ..methods import get_method
    from ..train.arguments import check_local_path, check_model_path
    from ..train.evaluate import load_encoder
    from .runner import evaluation_batches

    parser = CommandLineParser(
        prog="python -m hf_vssl.evaluation.invariance",
        description="Which cues a frozen encoder matches: cosine similarity between the views of its method's "
        "pretraining recipe, within and across videos, and of each view with itself played backwards.",
    )
    parser.add_argument(
        "--model", required=True, help="an encoder folder or Hub id (e.g. a run's OUTPUT_DIR/final)"
    )
    parser.add_argument(
        "--data", required=True, help="a video source (folder, shards, dataset id); labels are not needed"
    )
    parser.add_argument("--split", default="train")
    parser.add_argument(
        "--recipe", default="{}", help="YAML mapping of recipe overrides, e.g. '{flip_prob: 0.0}'"
    )
    parser.add_argument("--max_videos", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument(
        "--random_init", action="store_true", help="the same encoder at random initialisation"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")
    args = parser.parse_args(argv)
    for name, least in (("max_videos", 1), ("batch_size", 1), ("num_workers", 0)):
        if getattr(args, name) < least:
            parser.error(f"--{name} must be >= {least}, got {getattr(args, name)}")
    check_model_path("model", args.model)
    check_local_path("data", args.data)
    overrides = yaml.safe_load(args.recipe) or {}
    if not isinstance(overrides, dict):
        raise UsageError(f"--recipe must be a YAML mapping, got {args.recipe!r}")

    model = load_encoder(args.model, random_init=args.random_init, seed=args.seed)
    try:
        recipe = get_method(model.config.model_type).build_recipe(model.config, **overrides)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--recipe: {error}") from error
    batches = evaluation_batches(
        args.data,
        recipe,
        split=args.split,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        require_labelled=False,
    )
    results = view_similarity(model, batches, recipe.view_names, max_videos=args.max_videos)
    print(format_similarity_table(results))
    return results


if __name__ == "__main__":
    main()
