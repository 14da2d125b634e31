"""Accuracy of a video classifier that sees several views (clips x crops) of every video."""

import torch


def multi_view_accuracy(model, loader, recipe, placement) -> float:
    """Top-1 accuracy, a fraction, with the softmax averaged over every clip and crop of a video.

    ``loader`` yields batches of the evaluation ``recipe``; ``placement.finish(batch, recipe)`` (a
    `hf_vssl.data.loader.Stage2Placement`) gives ``pixel_values`` ``[videos, views, T, C, H, W]`` and ``labels``
    ``[videos]``. The model is left in training mode.
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
    return correct / max(total, 1)
