"""Cross-process gathers for contrastive negatives, with and without gradient.

Everything reads the world size and rank from `torch.distributed` at call time and falls back to a single
process (world size 1, rank 0, gathers are the identity) when no process group is initialised. Nothing here
hard-codes a world size or needs accelerate, so model code that is shipped with checkpoints can use it.

Why `gather_with_grad` gives single-process results. Let each rank r compute `L_r`, the mean of the per-anchor
losses of its own anchors against the gathered candidates, and let DDP average the parameter gradients. The
all-gather's backward is a reduce-scatter with sum, so rank s receives `sum_r dL_r/dz_s` for its shard `z_s`;
DDP then averages `sum_s sum_r dL_r/dz_s dz_s/dtheta` over ranks, which is the gradient of `mean_r L_r`, and with
equal shards `mean_r L_r` is exactly the loss of one process on the whole batch.

This module is imported by model code that is shipped with checkpoints (`trust_remote_code`), so it may only
import torch, transformers and sibling modules with single-dot relative imports.
"""

import torch
import torch.distributed as dist

__all__ = [
    "gather_no_grad",
    "gather_rows",
    "gather_with_grad",
    "gather_with_local_grad",
    "is_distributed",
    "rank",
    "world_size",
]


def is_distributed() -> bool:
    """Whether a default process group is initialised (with any number of processes)."""
    return dist.is_available() and dist.is_initialized()


def world_size(group: "dist.ProcessGroup | None" = None) -> int:
    """Number of processes in `group` (default: all), read from the runtime; 1 when not distributed."""
    return dist.get_world_size(group) if is_distributed() else 1


def rank(group: "dist.ProcessGroup | None" = None) -> int:
    """This process' rank in `group` (default: all), read from the runtime; 0 when not distributed."""
    return dist.get_rank(group) if is_distributed() else 0


def _functional_all_gather(tensor: torch.Tensor, group) -> torch.Tensor:
    """Differentiable all-gather along dim 0 (backward: reduce-scatter with sum)."""
    from torch.distributed import _functional_collectives as funcol

    if hasattr(funcol, "all_gather_single_autograd"):
        # Recent torch (2.13 here): `all_gather_single` itself is autograd-aware and this is its autograd name;
        # the older `all_gather_tensor_autograd` still works there but warns that it is deprecated.
        return funcol.all_gather_single_autograd(tensor, 0, group)
    return funcol.all_gather_tensor_autograd(tensor, 0, group)


def _shard_sizes(tensor: torch.Tensor, group) -> list[int]:
    """Dim-0 size of every rank's shard (one tiny collective and one host read)."""
    local = torch.tensor([tensor.shape[0]], dtype=torch.long, device=tensor.device)
    sizes = [torch.empty_like(local) for _ in range(world_size(group))]
    dist.all_gather(sizes, local, group=group)
    return torch.cat(sizes).tolist()


def _check_tensor(tensor: torch.Tensor, name: str) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} expects a torch.Tensor, got {type(tensor).__name__}.")
    if tensor.ndim == 0:
        raise ValueError(f"{name} gathers along dim 0 and needs a tensor with at least one dimension.")


def _gather(tensor: torch.Tensor, group, sizes: list[int] | None) -> torch.Tensor:
    """All-gather along dim 0 with autograd; `sizes` (every rank's dim 0) enables padding of uneven shards."""
    tensor = tensor.contiguous()
    largest = tensor.shape[0] if sizes is None else max(sizes)
    if sizes is None or all(size == largest for size in sizes):
        return _functional_all_gather(tensor, group)
    padding = tensor.new_zeros((largest - tensor.shape[0], *tensor.shape[1:]))
    padded = _functional_all_gather(torch.cat([tensor, padding]), group)  # [world * largest, ...]
    keep = torch.cat(
        [torch.arange(size, device=tensor.device) + index * largest for index, size in enumerate(sizes)]
    )
    return padded.index_select(0, keep)


def _resolve(group: "dist.ProcessGroup | None") -> "dist.ProcessGroup":
    return dist.group.WORLD if group is None else group


def gather_with_grad(
    tensor: torch.Tensor, group: "dist.ProcessGroup | None" = None, assume_equal_sizes: bool = False
) -> torch.Tensor:
    """All-gather `tensor` `[n, ...]` along dim 0 into `[sum of n over ranks, ...]`, differentiably.

    Rows are ordered by rank. The backward sends every rank's gradient for a row back to the rank that owns it
    and sums it there (reduce-scatter), so with per-rank mean losses and DDP gradient averaging the training step
    equals a single process on the whole batch (see the module docstring). Identity when not distributed.

    Shards may differ in size: the sizes are exchanged first (one small collective and a host read) and the
    shards padded. `assume_equal_sizes=True` skips that exchange; shards of different sizes are then an error
    inside the collective.
    """
    _check_tensor(tensor, "gather_with_grad")
    if world_size(group) == 1:
        return tensor
    group = _resolve(group)
    sizes = None if assume_equal_sizes else _shard_sizes(tensor, group)
    return _gather(tensor, group, sizes)


@torch.no_grad()
def gather_no_grad(
    tensor: torch.Tensor, group: "dist.ProcessGroup | None" = None, assume_equal_sizes: bool = False
) -> torch.Tensor:
    """All-gather `tensor` `[n, ...]` along dim 0 without gradient (queue keys, prototype scores, labels).

    Same ordering and uneven-shard handling as `gather_with_grad`; the result is detached.
    """
    _check_tensor(tensor, "gather_no_grad")
    if world_size(group) == 1:
        return tensor.detach()
    group = _resolve(group)
    sizes = None if assume_equal_sizes else _shard_sizes(tensor, group)
    # .detach() also waits on the asynchronous result and returns a plain tensor.
    return _gather(tensor.detach(), group, sizes).detach()


def gather_with_local_grad(
    tensor: torch.Tensor, group: "dist.ProcessGroup | None" = None, assume_equal_sizes: bool = False
) -> torch.Tensor:
    """All-gather where only this rank's own rows keep their gradient (the MLFO authors' scheme).

    The other ranks' rows are constants, so a rank's shard receives gradient from its own loss only, and the
    cross-rank terms that `gather_with_grad` delivers are dropped: the MLFO code's scheme and MLFO's default
    (`gather_gradient="local"`). It does not give single-process gradients.
    """
    _check_tensor(tensor, "gather_with_local_grad")
    if world_size(group) == 1:
        return tensor
    group = _resolve(group)
    sizes = None if assume_equal_sizes else _shard_sizes(tensor, group)
    start = rank(group) * tensor.shape[0] if sizes is None else sum(sizes[: rank(group)])
    with torch.no_grad():
        gathered = _gather(tensor.detach(), group, sizes)
    return torch.cat([gathered[:start], tensor, gathered[start + tensor.shape[0] :]])


def gather_rows(
    tensor: torch.Tensor,
    gradient: str = "all",
    group: "dist.ProcessGroup | None" = None,
    assume_equal_sizes: bool = False,
) -> torch.Tensor:
    """Every process's rows of `tensor`, with gradient as a model's `gather_gradient` setting says.

    `"all"`: `gather_with_grad` (several processes train exactly as one on their joint batch); `"local"`:
    `gather_with_local_grad` (only this process's rows carry gradient, the MLFO authors' scheme).
    """
    if gradient == "all":
        return gather_with_grad(tensor, group, assume_equal_sizes)
    if gradient == "local":
        return gather_with_local_grad(tensor, group, assume_equal_sizes)
    raise ValueError(f"`gradient` must be 'all' or 'local', got {gradient!r}.")
