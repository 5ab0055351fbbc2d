"""Tests for sslunet.ssl.losses.ntxent against a naive loop over the paper's formula."""

from __future__ import annotations

import math

import pytest
import torch

from sslunet.ssl.losses.ntxent import NTXentLoss
from tests.helpers.oracles import cos


def _naive_ntxent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    z = torch.cat([z1, z2]).double()
    n = z1.shape[0]
    total = 0.0
    for i in range(2 * n):
        p = (i + n) % (2 * n)
        denom = sum(math.exp(cos(z[i], z[k]) / tau) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(cos(z[i], z[p]) / tau) / denom)
    return total / (2 * n)


@pytest.mark.parametrize("n", [2, 4, 7])
@pytest.mark.parametrize("d", [3, 16])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_ntxent_matches_naive_loop(n, d, tau):
    g = torch.Generator().manual_seed(100 * n + d)
    z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    got = NTXentLoss(temperature=tau)(z1, z2)
    assert got.item() == pytest.approx(_naive_ntxent(z1, z2, tau), rel=1e-5, abs=1e-6)


def test_ntxent_is_low_for_matching_views_and_rejects_bad_input():
    z = torch.eye(4) * 3.0
    low = NTXentLoss(0.1)(z, z + 0.01)
    high = NTXentLoss(0.1)(z, z[[1, 2, 3, 0]])
    assert low.item() < 0.01 < high.item()
    with pytest.raises(ValueError):
        NTXentLoss(temperature=0.0)
    with pytest.raises(ValueError):
        NTXentLoss()(torch.zeros(3, 2), torch.zeros(2, 2))
