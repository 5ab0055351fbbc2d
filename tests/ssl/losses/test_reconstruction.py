"""Tests for sslunet.ssl.losses.reconstruction against naive formulas."""

from __future__ import annotations

import pytest
import torch

from sslunet.ssl.losses.reconstruction import MaskedMSELoss, ReconstructionLoss


def test_masked_mse_matches_naive():
    g = torch.Generator().manual_seed(9)
    pred, target = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)
    mask = torch.rand(2, 1, 4, 5, generator=g) < 0.4
    expected = ((pred - target) ** 2).permute(0, 2, 3, 1)[mask[:, 0]].mean()  # (n_masked, C)
    torch.testing.assert_close(MaskedMSELoss()(pred, target, mask), expected)
    p = pred.clone().requires_grad_()
    zero = MaskedMSELoss()(p, target, torch.zeros_like(mask))
    zero.backward()
    assert zero.item() == 0.0 and torch.all(p.grad == 0)
    with pytest.raises(ValueError):
        MaskedMSELoss()(pred, target, mask[:, :, :3])


def test_reconstruction_loss():
    pred, target = torch.randn(2, 1, 3, 3, 3), torch.randn(2, 1, 3, 3, 3)
    torch.testing.assert_close(
        ReconstructionLoss("mse")(pred, target), torch.nn.functional.mse_loss(pred, target)
    )
    torch.testing.assert_close(
        ReconstructionLoss("l1")(pred, target), torch.nn.functional.l1_loss(pred, target)
    )
    with pytest.raises(ValueError):
        ReconstructionLoss("huber")
