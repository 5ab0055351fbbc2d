"""Projection heads and pooling shared by the contrastive objectives (SimCLR, Chaitanya et
al.'s global stage, ReFs), built reproducibly from a seed."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def seeded(seed: int, factory: Callable[[], nn.Module]) -> nn.Module:
    """Build a head with PyTorch's default init drawn from ``seed``, not the global stream.

    The global RNG state is restored afterwards, so building a head neither depends on nor
    disturbs the caller's randomness.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


POOL_GRID = 4  # cells per axis of the pooled bottleneck


def pooled_grid(spatial: Sequence[int], cells: int = POOL_GRID) -> tuple[int, ...]:
    """Grid the bottleneck is pooled to: at most ``cells`` per axis."""
    return tuple(min(int(s), cells) for s in spatial)


def grid_pool(features: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Average-pool to a coarse grid and flatten: ``(B, C, *S) -> (B, C * prod(grid))``.

    Why not a global average: the U-Net's stages end with instance normalisation, which sets
    every channel's spatial mean to the same value before the nonlinearity, so a global
    average of the bottleneck hardly depends on the image (contrastive losses then stay at
    chance). Chaitanya et al. flatten the whole bottleneck; a small grid keeps its layout with
    a head whose size does not grow with the patch.
    """
    pool = F.adaptive_avg_pool2d if features.ndim == 4 else F.adaptive_avg_pool3d
    return pool(features, tuple(grid)).flatten(1)  # (B, C, *grid) -> (B, C * prod(grid))


class ProjectionHead(nn.Sequential):
    """SimCLR / Chaitanya et al.'s g1: ``Linear(C, hidden) -> ReLU -> Linear(hidden, out)``.

    Without biases, as in Chaitanya et al.'s code (Dense 1024 ReLU, Dense 128). Input
    ``(N, C)``, output ``(N, out)``.
    """

    def __init__(self, in_features: int, hidden: int, out: int):
        super().__init__(nn.Linear(in_features, hidden, bias=False), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out, bias=False))
