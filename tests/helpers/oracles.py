"""Naive reference implementations (plain loops over the definitions) that several test modules
check the package against."""

from __future__ import annotations

import math

import numpy as np
import torch


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def naive_pair_loss(z: torch.Tensor, pos_sets, neg_sets, tau: float) -> float:
    """Mean over (a, p) of -log(e^{s_ap} / (e^{s_ap} + sum_{k in neg(a)} e^{s_ak}))."""
    z = z.double()
    total, count = 0.0, 0
    for a in range(len(z)):
        neg_sum = sum(math.exp(cos(z[a], z[k]) / tau) for k in neg_sets[a])
        for p in pos_sets[a]:
            e = math.exp(cos(z[a], z[p]) / tau)
            total += -math.log(e / (e + neg_sum))
            count += 1
    return total / count


def naive_bbox(data: np.ndarray) -> tuple[tuple[int, int], ...]:
    """The smallest box holding every voxel that is nonzero in any channel of (C, *spatial)."""
    idx = np.argwhere(np.any(data != 0, axis=0))
    return tuple((int(lo), int(hi) + 1) for lo, hi in zip(idx.min(0), idx.max(0)))
