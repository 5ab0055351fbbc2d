"""Data-parallel training on PyTorch's own engine (torchrun + DistributedDataParallel).

The CLI reads torchrun's environment variables once (:meth:`DistContext.from_environ`) and
passes the context down; nothing below reads the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> "DistContext":
        """torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; absent means a single process."""
        world = int(env.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(int(env["RANK"]), int(env.get("LOCAL_RANK", "0")), world)


def init_distributed(ctx: DistContext, device: torch.device) -> None:
    """Join the process group (NCCL on CUDA, gloo on CPU); no-op for a single process."""
    if not ctx.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world_size)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t)
    return t


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
