"""Tests for sslunet.ssl.masking: MAE / SparK block masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sslunet.ssl.masking import apply_mask, block_mask


def _image(shape=(2, 24, 20), seed=0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.6, 0.75, 1.0])
def test_block_mask_ratio_divisible(ratio):
    mask = block_mask((32, 48, 16), (16, 16, 8), ratio, np.random.default_rng(0))
    assert mask.shape == (1, 32, 48, 16) and mask.dtype == bool
    blocks = mask[0].reshape(2, 16, 3, 16, 2, 8)  # (gz, bz, gy, by, gx, bx)
    per_block = blocks.transpose(0, 2, 4, 1, 3, 5).reshape(12, -1)  # (blocks, voxels)
    assert np.all(per_block.all(axis=1) | ~per_block.any(axis=1))  # whole blocks only
    assert per_block.all(axis=1).sum() == math.floor(ratio * 12 + 0.5)
    assert mask.mean() == pytest.approx(math.floor(ratio * 12 + 0.5) / 12)



def test_block_mask_non_divisible_and_deterministic():
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    mask = block_mask((20, 21), (8, 5), 0.75, rng_a)
    np.testing.assert_array_equal(mask, block_mask((20, 21), (8, 5), 0.75, rng_b))
    assert mask.shape == (1, 20, 21)
    grid = (3, 5)  # ceil(20/8), ceil(21/5): 15 blocks, border blocks are smaller
    masked = 0
    for i in range(grid[0]):
        for j in range(grid[1]):
            block = mask[0, 8 * i : 8 * i + 8, 5 * j : 5 * j + 5]
            assert block.all() or not block.any()
            masked += int(block.all())
    assert masked == round(0.75 * 15)
    with pytest.raises(ValueError):
        block_mask((8, 8), 4, 1.2, rng_a)
    with pytest.raises(ValueError):
        block_mask((8, 8), (4, 4, 4), 0.5, rng_a)



def test_apply_mask():
    image = _image((2, 8, 8))
    mask = block_mask((8, 8), 4, 0.5, np.random.default_rng(1))
    out = apply_mask(image, mask, fill=-1.0)
    assert out.dtype == image.dtype and out.shape == image.shape
    np.testing.assert_array_equal(out[:, mask[0]], -1.0)
    np.testing.assert_array_equal(out[:, ~mask[0]], image[:, ~mask[0]])
    with pytest.raises(ValueError):
        apply_mask(image, mask.astype(np.float32))
