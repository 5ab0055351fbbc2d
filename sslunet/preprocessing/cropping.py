"""Cropping to the nonzero region, the first step of preprocessing (as in nnU-Net): MR volumes
often carry a wide zero border (skull-stripping, field of view padding) that costs memory and
biases the patch sampler; the fingerprint crops the same way to predict preprocessed shapes."""

from __future__ import annotations

import numpy as np


def nonzero_bbox(data: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Bounding box (start, stop) per spatial axis of voxels nonzero in any channel.

    ``data`` is (C, z, y, x). An all-zero image keeps its full extent.
    """
    mask = np.any(data != 0, axis=0)
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        box.append((int(hit[0]), int(hit[-1]) + 1) if hit.size else (0, mask.shape[axis]))
    return tuple(box)
