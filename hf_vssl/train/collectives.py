"""What the processes of a training script agree on, step by step."""

import torch


def all_processes_have_batch(accelerator, has_batch: bool) -> bool:
    """True while every process still has a batch: the epoch ends for all at once, so no process waits in a
    collective its peers never reach (streams may split a few samples unevenly across processes).

    One process needs no agreement, and no read of a device tensor that would wait for the previous step's
    kernels before the next batch can be prepared."""
    if accelerator.num_processes == 1:
        return has_batch
    flag = torch.tensor([1.0 if has_batch else 0.0], device=accelerator.device)
    return bool(accelerator.reduce(flag, reduction="sum").item() == accelerator.num_processes)
