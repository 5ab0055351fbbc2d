"""Gradient-preserving gathering of embeddings across ``torch.distributed`` ranks.

Contrastive losses grow their set of negatives with the world size by comparing the local
anchors with the keys of every rank. The gathered keys must carry gradients back to the rank
that owns them; :func:`gather_with_grad` does this with a small autograd Function.

Why our own Function and not ``torch.distributed.nn.functional.all_gather``: that one needs
equally sized tensors on every rank, and on non-NCCL backends its backward emulates a
reduce-scatter with scatter/gather. Ours pads to the largest rank (so the last, smaller batch
of an epoch works) and uses ``all_reduce`` in backward, which every backend supports.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def distributed_world() -> tuple[int, int]:
    """Return ``(rank, world_size)``; ``(0, 1)`` when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather_sizes(n: int, device: torch.device) -> list[int]:
    """Row count of every rank, in rank order."""
    _, world = distributed_world()
    mine = torch.tensor([n], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(mine) for _ in range(world)]
    dist.all_gather(sizes, mine)
    return [int(s.item()) for s in sizes]


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 forward; backward sums the gradient over ranks, keeps our slice.

    Each rank's loss depends on every rank's rows, so the gradient of the *sum* of the per-rank
    losses with respect to our rows is the all-reduced (summed) gradient, restricted to the
    rows this rank contributed.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:  # noqa: D102
        rank, _ = distributed_world()
        max_n = max(sizes)
        padded = x.new_zeros((max_n, *x.shape[1:]))
        padded[: x.shape[0]] = x
        buffers = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(buffers, padded.contiguous())
        ctx.sizes = sizes
        ctx.rank = rank
        return torch.cat([b[:n] for b, n in zip(buffers, sizes)], dim=0)  # (sum(sizes), ...)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        total = grad.contiguous().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return total[start : start + ctx.sizes[ctx.rank]], None


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate ``x`` from all ranks along dim 0, keeping gradients.

    Every rank must call this (and later run backward) in lockstep, as with DDP. Non-float
    tensors (ids) are gathered the same way; they simply carry no gradient.

    Args:
        x: ``(n_r, ...)`` rows of this rank; ``n_r`` may differ between ranks.

    Returns:
        ``(gathered, offset)``: ``gathered`` is ``(sum_r n_r, ...)`` in rank order, ``offset``
        the index of this rank's first row in it. Without distributed: ``(x, 0)``.
    """
    rank, world = distributed_world()
    if world == 1:
        return x, 0
    sizes = _gather_sizes(x.shape[0], x.device)
    offset = sum(sizes[:rank])
    if x.is_floating_point() and x.requires_grad:
        return _GatherWithGrad.apply(x, sizes), offset
    with torch.no_grad():
        return _GatherWithGrad.apply(x, sizes), offset
