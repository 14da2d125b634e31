"""Stage 2: render a collated stage-1 batch into ``pixel_values``: crops, resizes and flips on tensors, then colour.

:func:`apply_views` (per batch, on any device) cuts every view's box from its decoded canvases and resizes it
(one resize call per view, all its ``T`` frames at once: a view shares one box), mirrors flipped views, and hands
the frames to the colour stage (:mod:`hf_vssl.data.color`: jitter, gray, blur, normalisation) as tensor
operations on ``[B*V*T, C, H, W]``; no per-frame Python. On GPUs the colour stage is one batched pass; on CPU it
runs view by view while the view's frames are still in cache (the work is memory-bound there). The output holds
``pixel_values`` ``[B, V, T, C, H, W]`` and every parameter that produced it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from .batches import batch_to_device
from .color import apply_fused_color, fused_color_maps, fused_color_workspace, gaussian_blur, render_color
from .sampling import COLOR_KEYS

if TYPE_CHECKING:
    from .plans import ViewRecipe

__all__ = ["STAGE1_ONLY_KEYS", "apply_views", "resample_views"]

# stage-1 entries that stage 2 consumes and does not pass on
STAGE1_ONLY_KEYS = ("frames", "frame_slots", "canvas_boxes")


def apply_views(
    batch: dict[str, Any],
    recipe: ViewRecipe,
    out: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Stage 2: render every view of a collated stage-1 batch on the batch's device (or on ``device``).

    Args:
        batch: a stage-1 batch from :func:`~hf_vssl.data.batches.collate_views` (tensors on any device);
            ``frames`` ``uint8 [B, S, Hc, Wc, 3]``. A batch the DataLoader workers rendered already is refused:
            where stage 2 runs is :func:`~hf_vssl.data.loader.stage2_placement`'s decision, not guessed here.
        recipe: supplies ``output_size``, ``mean``/``std``, ``color_mode``, ``gray_before_jitter``,
            ``antialias``.
        out: optional ``float32 [B, V, T, 3, H, W]`` buffer for ``pixel_values`` (e.g. in shared memory).
        device: move the batch's tensors there first (asynchronously when they are pinned).

    Returns:
        The batch without ``frames``/``frame_slots``/``canvas_boxes`` and with ``pixel_values``
        ``float32 [B, V, T, 3, H, W]`` (normalised), next to every recorded parameter: ``frame_indices``
        ``[B, V, T]``, ``crop_boxes`` ``[B, V, 4]`` (source pixels), ``flips`` ``[B, V]``, colour parameters
        ``[B, V, T]`` (``jitter_order`` ``[B, V, T, 4]``), ``labels``, recipe extras.
    """
    if "frames" not in batch:
        raise ValueError(
            f"apply_views renders stage-1 batches (with 'frames'); this one holds {sorted(batch)}. A batch "
            "rendered in the DataLoader workers is finished by its loader's Stage2Placement.finish instead."
        )
    batch = batch_to_device(batch, device)
    frames, slots = batch["frames"], batch["frame_slots"]
    B, V, T = slots.shape
    size = (int(recipe.output_size[0]), int(recipe.output_size[1]))
    flat = {
        name: batch[name].reshape(B * V * T, *batch[name].shape[3:]) for name in (*COLOR_KEYS, "jitter_order")
    }
    if out is None:
        pixels = torch.empty((B * V * T, 3, *size), dtype=torch.float32, device=frames.device)
    else:
        if tuple(out.shape) != (B, V, T, 3, *size) or out.dtype != torch.float32:
            raise ValueError(f"out must be float32 {(B, V, T, 3, *size)}, got {out.dtype} {tuple(out.shape)}")
        pixels = out.view(B * V * T, 3, *size)
    geometry = (frames, slots, batch["canvas_boxes"], batch["flips"], size, recipe.antialias)
    if recipe.color_mode == "fused" and frames.device.type == "cpu":
        # Cache blocking: colour each view while its resampled frames are still in cache. The whole chain is
        # memory-bound on CPU, and one view (T frames) fits in L2 where a batch does not.
        maps = fused_color_maps(flat, recipe.gray_before_jitter, recipe.mean, recipe.std)
        workspace = fused_color_workspace(T, size, frames.device)
        for start, clip in _resampled_views(*geometry):
            end = start + T
            apply_fused_color(
                clip,
                *(m[start:end] for m in maps[:2]),
                *maps[2:],
                recipe.mean,
                recipe.std,
                out=pixels[start:end],
                workspace=workspace,
            )
    else:  # one batched pass (GPUs, and the sequential colour mode)
        clips = resample_views(*geometry)
        pixels.copy_(
            render_color(clips, flat, recipe.color_mode, recipe.gray_before_jitter, recipe.mean, recipe.std)
        )
    if bool((flat["blur_sigma"] > 0).any()):
        gaussian_blur(pixels, flat["blur_sigma"], out=pixels)
    rendered = {name: value for name, value in batch.items() if name not in STAGE1_ONLY_KEYS}
    rendered["pixel_values"] = pixels.view(B, V, T, 3, *size)
    return rendered


def _resampled_views(
    frames: torch.Tensor,
    frame_slots: torch.Tensor,
    canvas_boxes: torch.Tensor,
    flips: torch.Tensor,
    size: tuple[int, int],
    antialias: bool,
    integer: bool | None = None,
):
    """Yield ``(first flat frame index, [T, 3, H, W] clip in [0, 255])`` for every view, in ``B, V`` order.

    All frames of a view share one box, so each view is a single resize of a ``[T, 3, h, w]`` slice of the
    canvas (only the crop region is gathered). ``integer`` (default: on CPU) resizes ``uint8`` frames with
    PyTorch's vectorised antialiased kernel (fixed-point weights, results rounded; by far the fastest CPU
    path); otherwise the resize runs in ``float32`` (GPUs).
    """
    B, V, T = frame_slots.shape
    integer = frames.device.type == "cpu" if integer is None else integer
    boxes, flip_list = canvas_boxes.tolist(), flips.tolist()  # one host sync for the whole batch
    for b in range(B):
        for v in range(V):
            x0, y0, x1, y1 = boxes[b][v]
            clip = frames[b, :, y0:y1, x0:x1].index_select(0, frame_slots[b, v]).permute(0, 3, 1, 2)
            if not integer:
                clip = clip.float()
            if tuple(clip.shape[-2:]) != size:
                clip = F.interpolate(
                    clip, size=size, mode="bilinear", antialias=antialias, align_corners=False
                )
            yield (b * V + v) * T, clip.flip(-1) if flip_list[b][v] else clip


def resample_views(
    frames: torch.Tensor,
    frame_slots: torch.Tensor,
    canvas_boxes: torch.Tensor,
    flips: torch.Tensor,
    size: tuple[int, int],
    antialias: bool = True,
    integer: bool | None = None,
) -> torch.Tensor:
    """Crop every view's box from its frames, resize it to ``size`` and mirror flipped views.

    Args:
        frames: ``uint8 [B, S, Hc, Wc, 3]`` decoded canvases.
        frame_slots: ``int64 [B, V, T]`` index into ``S`` of every output frame.
        canvas_boxes: ``int64 [B, V, 4]`` integer boxes ``(x0, y0, x1, y1)`` in canvas pixels.
        flips: ``bool [B, V]``.
        size: output ``(H, W)``.
        integer: resize in ``uint8`` (default on CPU) or in ``float32`` (default elsewhere).

    Returns:
        ``[B*V*T, 3, H, W]`` with values in ``[0, 255]``, ``uint8`` or ``float32`` as resized.
    """
    B, V, T = frame_slots.shape
    integer = frames.device.type == "cpu" if integer is None else integer
    out = torch.empty(
        (B * V * T, 3, *size), dtype=torch.uint8 if integer else torch.float32, device=frames.device
    )
    for start, clip in _resampled_views(frames, frame_slots, canvas_boxes, flips, size, antialias, integer):
        out[start : start + T] = clip
    return out
