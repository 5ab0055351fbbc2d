"""MAE / SparK block masking for CNNs (He et al. 2022; Tian et al. 2023), as in nnssl's MAE:
the patch is cut into blocks, a share of them is masked (filled) and the network restores
them. On one image ``(C, *spatial)`` at a time; randomness from an explicit generator."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sslunet.utils.shapes import check_channels_first, per_axis


def block_mask(
    spatial_shape: Sequence[int],
    block_size: int | Sequence[int],
    mask_ratio: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Random block mask, True = masked.

    The image is tiled by blocks of ``block_size`` (one per axis; anisotropic allowed) starting
    at 0; a shape not divisible by the block size gets smaller blocks at the upper border, which
    count as blocks. Exactly ``round(mask_ratio * num_blocks)`` (half up) blocks are masked;
    the voxel fraction equals ``mask_ratio`` only up to that rounding and the border blocks.
    nnssl's MAE: ``mask_ratio = 0.75`` with 16^3 blocks.

    Returns:
        ``(1, *spatial_shape)`` bool array.
    """
    size = per_axis(block_size, len(spatial_shape), "block_size")
    if not 0.0 <= mask_ratio <= 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1], got {mask_ratio}")
    grid = tuple(math.ceil(s / b) for s, b in zip(spatial_shape, size))
    num_blocks = math.prod(grid)
    num_masked = int(math.floor(mask_ratio * num_blocks + 0.5))
    flat = np.zeros(num_blocks, dtype=bool)
    flat[rng.choice(num_blocks, size=num_masked, replace=False)] = True
    mask = flat.reshape(grid)  # (*grid)
    for axis, b in enumerate(size):
        mask = np.repeat(mask, b, axis=axis)
    crop = tuple(slice(0, s) for s in spatial_shape)
    return mask[crop][None]  # (1, *spatial_shape)


def apply_mask(image: np.ndarray, mask: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Replace masked voxels (all channels) by ``fill``.

    Args:
        image: ``(C, *spatial)``.
        mask: ``(1, *spatial)`` bool, True = masked.
        fill: value written into masked voxels (0 = the mean of z-scored images).
    """
    check_channels_first(image)
    if mask.shape != (1, *image.shape[1:]) or mask.dtype != bool:
        raise ValueError(f"mask must be bool (1, {image.shape[1:]}), got {mask.dtype} {mask.shape}")
    return np.where(mask, np.asarray(fill, dtype=image.dtype), image).astype(
        image.dtype, copy=False
    )
