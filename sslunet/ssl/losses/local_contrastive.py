"""Chaitanya et al. (2020, NeurIPS) local contrastive losses L^R and L^D on decoder features.

The caller runs two *intensity-only* views of the same images through the (partially trained)
decoder, so location x in view 1 corresponds to location x in view 2. :func:`~sslunet.ssl.regions.extract_regions`
cuts small regions at fixed corners and flattens them (``(B, R, C * prod(r))``); the caller's
head g2 projects them (Chaitanya et al.: a shared dense layer to 128) and
:class:`LocalContrastiveLoss` compares the projected ``(B, R, D)`` region embeddings.

With ``s = cos / tau`` and, for every ordered positive pair (a, p)::

    l(a, p) = -log( e^{s_ap} / (e^{s_ap} + sum_{k in neg(a)} e^{s_ak}) );  loss = mean over pairs

* L^R: anchor = region r of view v of image b; positive = region r of the other view of b;
  negatives = every other region (index != r) of image b in both views (2(R-1) of them).
  The reference code uses 5 hard-coded neighbouring regions per anchor (10 negatives); ours is
  the clean "all other regions" version. Pass ``negative_table`` (see
  :func:`~sslunet.ssl.regions.nearest_region_table`) to restrict negatives to K nearest regions instead.
* L^D: images b, b' of the same partition (``partition_ids``) are related: positives of
  (b, v, r) are region r of every other view of b *and* of every view of b'; negatives are the
  regions with index != r of all related images. Cross-rank pairs are not gathered.

Every anchor of L^R has exactly one positive, so the pair mean is also the mean over the 2BR
anchors (the code's "/13 regions, /2B" normalisation).
"""

from __future__ import annotations


import torch
from torch import nn

from sslunet.ssl.losses._pairs import cosine_logits, pair_loss_sum

VARIANTS = ("LR", "LD")


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
