"""Region geometry of Chaitanya et al.'s (NeurIPS 2020) local contrastive stage: where the
small regions of a decoder feature map sit, cutting them out, and which regions are each
other's nearest neighbours (the paper's hard negatives)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

from sslunet.utils.shapes import per_axis


def region_corners(
    spatial_shape: Sequence[int],
    region_size: int | Sequence[int],
    grid: int | Sequence[int] | str = 3,
) -> np.ndarray:
    """Corners (lowest index) of the anchor regions.

    Args:
        spatial_shape: feature-map size per spatial axis (2 or 3 axes).
        region_size: region edge length, one int or one per axis (Chaitanya et al.: 3).
        grid: points per axis, evenly spaced from 0 to ``size - region`` (a regular grid), or
            ``"chaitanya"``: the paper's layout, ``{0, W/2, W}`` per axis plus ``{W/4, 3W/4}``
            per axis, with ``W = size - region`` (13 regions in 2D, 35 in 3D; the code uses
            ``W = size - 4`` for 3x3 regions, one voxel of margin more than ours).

    Returns:
        ``(R, ndim)`` int array, unique corners in lexicographic order.
    """
    ndim = len(spatial_shape)
    size = per_axis(region_size, ndim, "region_size")
    span = [s - r for s, r in zip(spatial_shape, size)]
    if min(span) < 0:
        raise ValueError(f"region {size} larger than the feature map {tuple(spatial_shape)}")
    if isinstance(grid, str):
        if grid != "chaitanya":
            raise ValueError(f"unknown grid {grid!r}")
        coarse = [[0, w // 2, w] for w in span]
        fine = [[w // 4, (3 * w) // 4] for w in span]
        points = list(itertools.product(*coarse)) + list(itertools.product(*fine))
    else:
        counts = per_axis(grid, ndim, "grid")
        axes = [np.round(np.linspace(0, w, g)).astype(int) for w, g in zip(span, counts)]
        points = list(itertools.product(*axes))
    return np.unique(np.asarray(points, dtype=np.int64), axis=0)


def extract_regions(
    f: torch.Tensor,
    region_size: int | Sequence[int],
    grid: int | Sequence[int] | str | np.ndarray = 3,
) -> torch.Tensor:
    """Cut regions at fixed corners out of a feature map and flatten each one.

    Args:
        f: ``(B, C, *spatial)`` features, 2 or 3 spatial axes.
        region_size: region edge length, one int or one per axis.
        grid: anything :func:`region_corners` accepts, or an explicit ``(R, ndim)`` corner array.

    Returns:
        ``(B, R, C * prod(region_size))``, region r taken at corner r.
    """
    ndim = f.ndim - 2
    size = per_axis(region_size, ndim, "region_size")
    if isinstance(grid, np.ndarray) and grid.ndim == 2:
        corners = grid
    else:
        corners = region_corners(f.shape[2:], size, grid)
    regions = []
    for corner in corners:
        window = tuple(slice(int(c), int(c) + r) for c, r in zip(corner, size))
        patch = f[(slice(None), slice(None), *window)]  # (B, C, *size)
        if patch.shape[2:] != size:
            raise ValueError(
                f"region at {tuple(corner)} leaves the feature map {tuple(f.shape[2:])}"
            )
        regions.append(patch.reshape(f.shape[0], -1))  # (B, C * prod(size))
    return torch.stack(regions, dim=1)  # (B, R, C * prod(size))


def nearest_region_table(corners: np.ndarray, k: int) -> torch.Tensor:
    """For each region, the k other regions with the nearest corners (ties: lower index first).

    Args:
        corners: ``(R, ndim)`` corners.
        k: neighbours per region, ``1 <= k < R``.

    Returns:
        ``(R, k)`` long tensor of region indices, usable as ``negative_table``.
    """
    r = len(corners)
    if not 1 <= k < r:
        raise ValueError(f"k must be in [1, {r - 1}], got {k}")
    c = np.asarray(corners, dtype=np.float64)
    dist = ((c[:, None, :] - c[None, :, :]) ** 2).sum(-1)  # (R, R)
    np.fill_diagonal(dist, np.inf)
    return torch.from_numpy(np.argsort(dist, axis=1, kind="stable")[:, :k].copy())
