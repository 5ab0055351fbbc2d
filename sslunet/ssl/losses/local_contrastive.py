"""Chaitanya et al. (2020, NeurIPS) local contrastive losses L^R and L^D on decoder features.

The caller runs two *intensity-only* views of the same images through the (partially trained)
decoder, so location x in view 1 corresponds to location x in view 2. :func:`extract_regions`
cuts small regions at fixed corners and flattens them (``(B, R, C * prod(r))``); the caller's
head g2 projects them (Chaitanya et al.: a shared dense layer to 128) and
:class:`LocalContrastiveLoss` compares the projected ``(B, R, D)`` region embeddings.

With ``s = cos / tau`` and, for every ordered positive pair (a, p)::

    l(a, p) = -log( e^{s_ap} / (e^{s_ap} + sum_{k in neg(a)} e^{s_ak}) );  loss = mean over pairs

* L^R: anchor = region r of view v of image b; positive = region r of the other view of b;
  negatives = every other region (index != r) of image b in both views (2(R-1) of them).
  The reference code uses 5 hard-coded neighbouring regions per anchor (10 negatives); ours is
  the clean "all other regions" version. Pass ``negative_table`` (see
  :func:`nearest_region_table`) to restrict negatives to K nearest regions instead.
* L^D: images b, b' of the same partition (``partition_ids``) are related: positives of
  (b, v, r) are region r of every other view of b *and* of every view of b'; negatives are the
  regions with index != r of all related images. Cross-rank pairs are not gathered.

Every anchor of L^R has exactly one positive, so the pair mean is also the mean over the 2BR
anchors (the code's "/13 regions, /2B" normalisation).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from sslunet.ssl.losses._pairs import cosine_logits, pair_loss_sum

VARIANTS = ("LR", "LD")


def _per_axis(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    out = (int(value),) * ndim if np.isscalar(value) else tuple(int(v) for v in value)
    if len(out) != ndim or min(out) < 1:
        raise ValueError(f"{name} must be a positive int or {ndim} positive ints, got {value!r}")
    return out


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
    size = _per_axis(region_size, ndim, "region_size")
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
        counts = _per_axis(grid, ndim, "grid")
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
    size = _per_axis(region_size, ndim, "region_size")
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


def _region_negatives(num_regions: int, table: torch.Tensor | None, device) -> torch.Tensor:
    """``(R, R)`` bool: may region k serve as a negative of region r?"""
    if table is None:
        return ~torch.eye(num_regions, dtype=torch.bool, device=device)
    if table.ndim != 2 or table.shape[0] != num_regions:
        raise ValueError(f"negative_table must be (R={num_regions}, K)")
    allowed = torch.zeros(num_regions, num_regions, dtype=torch.bool, device=device)
    allowed[torch.arange(num_regions, device=device)[:, None], table.to(allowed.device).long()] = (
        True
    )
    return allowed & ~torch.eye(num_regions, dtype=torch.bool, device=device)


def local_pair_masks(
    batch_size: int,
    num_regions: int,
    partition_ids: torch.Tensor | None = None,
    negative_table: torch.Tensor | None = None,
    cross_image: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair masks over all ``2 * B * R`` region embeddings of both views.

    Row/column index ``(v * B + b) * R + r`` (view v, image b, region r), matching
    ``torch.cat([e1, e2]).reshape(-1, D)``.

    Args:
        batch_size: B.
        num_regions: R.
        partition_ids: ``(B,)`` for L^D; None for L^R (only the two views of b are related).
        negative_table: optional ``(R, K)`` allowed negative regions per region.
        cross_image: also use every region of every unrelated image as a negative (ours: the
            same position in another slice is a hard negative that position alone cannot tell
            apart, so the features must describe content).

    Returns:
        ``(pos, neg)``, both ``(2BR, 2BR)`` bool.
    """
    b, r = batch_size, num_regions
    device = None if partition_ids is None else partition_ids.device
    image = torch.arange(b, device=device).repeat(2)  # (2B,) image of each view
    if partition_ids is None:
        related = image[:, None] == image[None, :]  # (2B, 2B)
    else:
        part = partition_ids.to(device).repeat(2)  # (2B,)
        related = part[:, None] == part[None, :]  # (2B, 2B)
    same_region = torch.eye(r, dtype=torch.bool, device=device)  # (R, R)
    region_neg = _region_negatives(r, negative_table, device)  # (R, R)
    # (2B, 1, 2B, 1) & (1, R, 1, R) -> (2B, R, 2B, R) -> (2BR, 2BR)
    pos = (related[:, None, :, None] & same_region[None, :, None, :]).reshape(2 * b * r, 2 * b * r)
    neg = (related[:, None, :, None] & region_neg[None, :, None, :]).reshape(2 * b * r, 2 * b * r)
    if cross_image:  # (2B, 1, 2B, 1) -> (2B, R, 2B, R) -> (2BR, 2BR)
        neg |= (~related)[:, None, :, None].expand(2 * b, r, 2 * b, r).reshape(2 * b * r, 2 * b * r)
    pos &= ~torch.eye(2 * b * r, dtype=torch.bool, device=device)
    return pos, neg


class LocalContrastiveLoss(nn.Module):
    """L^R / L^D of Chaitanya et al. (2020) on projected region embeddings.

    Args:
        temperature: tau > 0 (paper: 0.1).
        variant: ``"LR"`` (random slices) or ``"LD"`` (partition-aware; needs partition_ids).
        cross_image: regions of unrelated images are negatives too (see
            :func:`local_pair_masks`); the paper compares regions within an image only.
    """

    def __init__(self, temperature: float = 0.1, variant: str = "LR", cross_image: bool = False):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.temperature = float(temperature)
        self.variant = variant
        self.cross_image = bool(cross_image)

    def forward(
        self,
        e1: torch.Tensor,
        e2: torch.Tensor,
        partition_ids: torch.Tensor | None = None,
        negative_table: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the loss.

        Args:
            e1: ``(B, R, D)`` region embeddings of view 1.
            e2: ``(B, R, D)`` region embeddings of view 2 (same regions, same order).
            partition_ids: ``(B,)`` partition of each image; required for L^D, ignored for L^R.
            negative_table: optional ``(R, K)`` indices restricting each region's negatives.

        Returns:
            Scalar loss, mean over ordered positive pairs.
        """
        if e1.ndim != 3 or e1.shape != e2.shape:
            raise ValueError(
                f"e1, e2 must both be (B, R, D), got {tuple(e1.shape)}, {tuple(e2.shape)}"
            )
        b, r, d = e1.shape
        batched = self.variant == "LD" or self.cross_image
        if self.variant == "LD" and (partition_ids is None or partition_ids.shape != (b,)):
            raise ValueError("variant 'LD' needs partition_ids of shape (B,)")
        if batched:
            parts = partition_ids.to(e1.device) if self.variant == "LD" else None
            pos, neg = local_pair_masks(b, r, parts, negative_table, self.cross_image)
            pos, neg = pos.to(e1.device), neg.to(e1.device)
            z = torch.cat([e1, e2], dim=0).reshape(2 * b * r, d)  # (2BR, D)
            logits = cosine_logits(z, z, self.temperature)  # (2BR, 2BR)
        else:
            # Only the two views of one image interact: a batched (B, 2R, 2R) problem.
            pos, neg = local_pair_masks(1, r, None, negative_table)  # (2R, 2R) each
            z = torch.cat([e1, e2], dim=1)  # (B, 2R, D)
            logits = cosine_logits(z, z, self.temperature)  # (B, 2R, 2R)
            pos, neg = pos.to(z.device), neg.to(z.device)
        count = int(pos.sum()) * (1 if batched else b)
        if count == 0:
            return e1.sum() * 0.0
        return pair_loss_sum(logits, pos, neg) / count
