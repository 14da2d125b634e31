"""Accuracy of a video classifier that sees several views (clips x crops) of every video."""

import torch
import torch.distributed as dist

from hf_vssl.distributed import world_size


def multi_view_accuracy(model, loader, recipe, placement) -> float:
    """Top-1 accuracy, a fraction, with the softmax averaged over every clip and crop of a video.

    ``loader`` yields batches of the evaluation ``recipe``; ``placement.finish(batch, recipe)`` (a
    `hf_vssl.data.loader.Stage2Placement`) gives ``pixel_values`` ``[videos, views, T, C, H, W]`` and ``labels``
    ``[videos]``. The model is left in training mode. In a distributed run each process passes the loader of
    its share of the videos and every process gets the accuracy over all of them.
    """
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for batch in loader:
            batch = placement.finish(batch, recipe)
            pixel_values, labels = batch["pixel_values"], batch["labels"]
            videos, views = pixel_values.shape[:2]
            logits = model(pixel_values.flatten(0, 1)).logits.float()
            probabilities = logits.softmax(dim=-1).view(videos, views, -1).mean(dim=1)
            correct += int((probabilities.argmax(dim=-1) == labels).sum())
            total += videos
    model.train()
    if world_size() > 1:
        counts = torch.tensor([correct, total], dtype=torch.float64, device=next(model.parameters()).device)
        dist.all_reduce(counts)
        correct, total = (int(c) for c in counts.tolist())
    return correct / max(total, 1)
