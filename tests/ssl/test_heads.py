"""Tests for sslunet.ssl.heads: pooling and projection heads of the contrastive objectives."""

from __future__ import annotations

import torch

from sslunet.ssl.heads import grid_pool


def test_grid_pool_keeps_the_layout_that_instance_norm_hides():
    x = torch.randn(3, 5, 8, 8)
    normed = torch.nn.functional.instance_norm(x)
    pooled = grid_pool(normed, (2, 2))
    assert pooled.shape == (3, 20)
    # the global mean of an instance-normalised map is 0 for every image: no information
    assert torch.allclose(normed.mean(dim=(2, 3)), torch.zeros(3, 5), atol=1e-5)
    assert pooled.std(dim=0).mean() > 0.1  # the grid cells still differ between images
    ref = normed.reshape(3, 5, 2, 4, 2, 4).mean(dim=(3, 5)).flatten(1)  # naive 2x2 pooling
    assert torch.allclose(pooled, ref, atol=1e-6)
