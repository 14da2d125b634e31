"""hf_vssl.distributed with two real processes (gloo on CPU) against one process on the same global batch."""

import datetime
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from hf_vssl.distributed import gather_no_grad, gather_with_grad, gather_with_local_grad, rank, world_size
from hf_vssl.losses import info_nce

WORLD = 2
NUM_VIDEOS, IN_DIM, DIM, TEMPERATURE = 6, 7, 5, 0.1
UNEVEN_SIZES = (3, 1)


def _global_batch():
    """The same global batch and initial weights in every process: clips A/B and their time-reversed versions."""
    generator = torch.Generator().manual_seed(0)
    clips = torch.randn(NUM_VIDEOS, 2, IN_DIM, generator=generator, dtype=torch.float64)
    reversed_clips = torch.randn(NUM_VIDEOS, 2, IN_DIM, generator=generator, dtype=torch.float64)
    weight = torch.randn(IN_DIM, DIM, generator=generator, dtype=torch.float64)
    return clips, reversed_clips, weight


def _motion_contrast_step(clips, reversed_clips, weight, gather, offset):
    """MLFO's motion contrast on the local videos `clips` [n, 2, IN_DIM] against all gathered clips.

    `offset` is the global index of this shard's first video. Returns the local loss (mean over local anchors)
    and d(loss)/d(weight) after the backward through the gather.
    """
    weight = weight.clone().requires_grad_(True)
    anchors = F.normalize(clips.reshape(-1, IN_DIM) @ weight, dim=1)  # [2n, D], video-major
    reversed_anchors = F.normalize(reversed_clips @ weight, dim=-1)  # [n, 2, D]
    candidates = gather(anchors)  # [2N, D]
    global_index = 2 * offset + torch.arange(anchors.shape[0])
    candidate_index = torch.arange(candidates.shape[0])
    positive = (global_index ^ 1)[:, None] == candidate_index[None, :]
    ignore = global_index[:, None] == candidate_index[None, :]
    extra = reversed_anchors.repeat_interleave(2, dim=0)  # the anchor video's own two reversed clips
    loss = info_nce(anchors, candidates, positive, TEMPERATURE, ignore_mask=ignore, extra_negatives=extra)
    loss.backward()
    return loss.detach(), weight.grad


def _average_like_ddp(grad):
    grad = grad.clone()
    dist.all_reduce(grad)
    return grad / dist.get_world_size()


def _worker(process_rank, rendezvous, results_dir):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{rendezvous}",
        rank=process_rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=120),
    )
    try:
        results = {"world_size": world_size(), "rank": rank()}
        clips, reversed_clips, weight = _global_batch()
        per_rank = NUM_VIDEOS // WORLD
        local = slice(process_rank * per_rank, (process_rank + 1) * per_rank)
        for name, gather in (("with_grad", gather_with_grad), ("local_grad", gather_with_local_grad)):
            loss, grad = _motion_contrast_step(
                clips[local], reversed_clips[local], weight, gather, offset=process_rank * per_rank
            )
            results[f"{name}_loss"] = loss
            results[f"{name}_grad"] = _average_like_ddp(grad)
        results["with_grad_equal_sizes_flag"] = gather_with_grad(
            clips[local].reshape(-1, IN_DIM), assume_equal_sizes=True
        ).clone()

        # Uneven shards: rank 0 holds rows 0..2, rank 1 holds row 3 of `rows`.
        rows = torch.arange(4 * 3, dtype=torch.float64).reshape(4, 3)
        start = sum(UNEVEN_SIZES[:process_rank])
        shard = rows[start : start + UNEVEN_SIZES[process_rank]].clone().requires_grad_(True)
        gathered = gather_with_grad(shard)
        weights = torch.arange(gathered.numel(), dtype=torch.float64).reshape(gathered.shape) * (
            process_rank + 1
        )
        (gathered * weights).sum().backward()
        results["uneven_gathered"] = gathered.detach().clone()
        results["uneven_grad"] = shard.grad
        no_grad = gather_no_grad(shard)
        results["uneven_no_grad"] = no_grad
        results["uneven_no_grad_requires_grad"] = no_grad.requires_grad
        torch.save(results, os.path.join(results_dir, f"rank{process_rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    directory = tmp_path_factory.mktemp("distributed")
    # A file rendezvous needs no free port; spawn (not fork) keeps the children free of the parent's threads.
    mp.start_processes(
        _worker, args=(str(directory / "rendezvous"), str(directory)), nprocs=WORLD, start_method="spawn"
    )
    return [torch.load(directory / f"rank{r}.pt") for r in range(WORLD)]


def test_world_size_and_rank_come_from_the_runtime(rank_results):
    assert [r["world_size"] for r in rank_results] == [WORLD, WORLD]
    assert [r["rank"] for r in rank_results] == list(range(WORLD))


def test_single_process_fallback():
    assert not dist.is_initialized()
    assert world_size() == 1 and rank() == 0
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x) is x and gather_with_local_grad(x) is x
    assert torch.equal(gather_no_grad(x), x) and not gather_no_grad(x).requires_grad


def test_two_processes_match_one_process_on_the_global_batch(rank_results):
    clips, reversed_clips, weight = _global_batch()
    loss, grad = _motion_contrast_step(clips, reversed_clips, weight, gather_with_grad, offset=0)
    ranks_mean_loss = torch.stack([r["with_grad_loss"] for r in rank_results]).mean()
    torch.testing.assert_close(ranks_mean_loss, loss, rtol=1e-12, atol=1e-12)
    for r in rank_results:  # DDP leaves the same averaged gradient on every rank
        torch.testing.assert_close(r["with_grad_grad"], grad, rtol=1e-10, atol=1e-12)


def test_local_gradient_gather_keeps_only_each_shards_own_rows(rank_results):
    """The MLFO code's scheme: the single-process loss, and per shard the gradient of its own anchors' loss with
    the other shards' rows as constants, averaged over shards (what DDP does), not the single-process gradient."""
    clips, reversed_clips, weight = _global_batch()
    loss, grad = _motion_contrast_step(clips, reversed_clips, weight, gather_with_grad, offset=0)
    ranks_mean_loss = torch.stack([r["local_grad_loss"] for r in rank_results]).mean()
    torch.testing.assert_close(ranks_mean_loss, loss, rtol=1e-12, atol=1e-12)

    per_rank = NUM_VIDEOS // WORLD
    constants = F.normalize(clips.reshape(-1, IN_DIM) @ weight, dim=1)  # every clip's embedding, no gradient
    shard_grads = []
    for shard in range(WORLD):
        videos = slice(shard * per_rank, (shard + 1) * per_rank)
        rows = slice(2 * videos.start, 2 * videos.stop)

        def gather(anchors, rows=rows):
            return torch.cat([constants[: rows.start], anchors, constants[rows.stop :]])

        _, shard_grad = _motion_contrast_step(
            clips[videos], reversed_clips[videos], weight, gather, offset=videos.start
        )
        shard_grads.append(shard_grad)
    expected = torch.stack(shard_grads).mean(dim=0)
    for r in rank_results:
        torch.testing.assert_close(r["local_grad_grad"], expected, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(expected, grad, rtol=1e-3, atol=1e-6)  # the cross-shard terms are really gone


def test_equal_sizes_fast_path_orders_rows_by_rank(rank_results):
    clips, _, _ = _global_batch()
    for r in rank_results:
        torch.testing.assert_close(r["with_grad_equal_sizes_flag"], clips.reshape(-1, IN_DIM))


def test_uneven_shards_are_gathered_and_gradients_return_to_their_owner(rank_results):
    rows = torch.arange(4 * 3, dtype=torch.float64).reshape(4, 3)
    base = torch.arange(rows.numel(), dtype=torch.float64).reshape(rows.shape)
    # Rank r's loss is sum(gathered * base * (r + 1)); its gradient for every row is summed at the row's owner.
    expected_grad = sum(base * (r + 1) for r in range(WORLD))
    start = 0
    for process_rank, result in enumerate(rank_results):
        torch.testing.assert_close(result["uneven_gathered"], rows)
        torch.testing.assert_close(result["uneven_no_grad"], rows)
        assert not result["uneven_no_grad_requires_grad"]
        size = UNEVEN_SIZES[process_rank]
        torch.testing.assert_close(result["uneven_grad"], expected_grad[start : start + size])
        start += size
