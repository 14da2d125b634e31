"""Run a function in two real gloo processes (CPU) and collect what each returns: the harness of the tests that
compare two processes with one process on the joint batch."""

import datetime

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _entry(rank, worker, rendezvous, results_path):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{rendezvous}",
        rank=rank,
        world_size=2,
        timeout=datetime.timedelta(seconds=120),
    )
    try:
        torch.save(worker(rank), f"{results_path}.{rank}")
    finally:
        dist.destroy_process_group()


def run_in_two_processes(worker, directory) -> list:
    """`worker(rank)` in two spawned processes of one process group; returns each rank's result, in rank order.

    `worker` must be a module-level function (spawned processes import it by name).
    """
    path = directory / "rank"
    mp.start_processes(
        _entry, args=(worker, str(directory / "rendezvous"), str(path)), nprocs=2, start_method="spawn"
    )
    return [torch.load(f"{path}.{rank}") for rank in range(2)]


def mean_over_processes(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of `tensor` over the processes (what DDP does with gradients), as a new tensor."""
    total = tensor.detach().clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()
