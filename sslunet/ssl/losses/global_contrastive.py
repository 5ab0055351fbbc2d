"""Chaitanya et al. (2020, NeurIPS) domain-specific global contrastive losses G^D and G^{D-}.

Each volume is split into S partitions of consecutive slices; a batch holds slices of several
volumes and partitions, each with one or more augmented views. This is the *clean* version
from our notes, not the reference TF code (which zero-pads rows and mixes normalisations):

* G^D:  positives of anchor a = every other image of the same partition (any volume, any view).
* G^D-: positives of anchor a = the other views of the same (volume, partition) only.
* Negatives (both): the images of a different partition. G^D- thus neither attracts nor
  repels same-partition images of other volumes, as in the reference code.

With ``s = cos / tau``, for every ordered positive pair (a, p)::

    l(a, p) = -log( e^{s_ap} / (e^{s_ap} + sum_{k in neg(a)} e^{s_ak}) )
    loss    = mean of l(a, p) over all ordered positive pairs

Normalisation (our choice): the mean over ordered positive pairs. The reference code divides a
sum by 3N (G^D-) or 4N (G^D), which differs from ours by a constant factor, i.e. only rescales
the learning rate. Distributed: like :class:`~sslunet.ssl.losses.ntxent.NTXentLoss`, local
anchors meet gathered keys and ids, and rank r returns ``W * (local pair-loss sum) /
(global pair count)``, so the mean over ranks equals the single-process loss. Volume ids must
then be unique across ranks (e.g. the case index), or same-id rows count as the same volume.
"""

from __future__ import annotations

import torch
from torch import nn

from sslunet.ssl.losses._distributed import distributed_world, gather_with_grad
from sslunet.ssl.losses._pairs import cosine_logits, pair_loss_sum

STRATEGIES = ("GD", "GD-")


def pair_masks(
    volume_ids: torch.Tensor, partition_ids: torch.Tensor, strategy: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative pair masks of G^D / G^{D-}.

    Args:
        volume_ids: ``(M,)`` integer volume of each image.
        partition_ids: ``(M,)`` integer partition of each image.
        strategy: ``"GD"`` or ``"GD-"``.

    Returns:
        ``(pos, neg)``, both ``(M, M)`` bool; row = anchor, column = key. The diagonal is
        false in both.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if volume_ids.shape != partition_ids.shape or volume_ids.ndim != 1:
        raise ValueError("volume_ids and partition_ids must both be (M,)")
    same_part = partition_ids[:, None] == partition_ids[None, :]  # (M, M)
    not_self = ~torch.eye(len(partition_ids), dtype=torch.bool, device=partition_ids.device)
    if strategy == "GD":
        pos = same_part & not_self
    else:
        same_vol = volume_ids[:, None] == volume_ids[None, :]  # (M, M)
        pos = same_part & same_vol & not_self
    return pos, ~same_part


def _check_unique_views(volume_ids, partition_ids, view_ids) -> None:
    """One slice per (volume, partition): the (volume, partition, view) triples are unique."""
    triples = torch.stack([volume_ids, partition_ids, view_ids], dim=1)  # (M, 3)
    if torch.unique(triples, dim=0).shape[0] != triples.shape[0]:
        raise ValueError(
            "duplicate (volume, partition, view) triple: sample one slice per partition"
        )


class GlobalDomainContrastiveLoss(nn.Module):
    """G^D / G^{D-} of Chaitanya et al. (2020), clean version.

    Args:
        temperature: tau > 0 (paper: 0.1).
        strategy: ``"GD"`` or ``"GD-"``.
        gather_distributed: gather embeddings and ids from all ranks when distributed.
    """

    def __init__(
        self, temperature: float = 0.1, strategy: str = "GD", gather_distributed: bool = True
    ):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        self.temperature = float(temperature)
        self.strategy = strategy
        self.gather_distributed = bool(gather_distributed)

    def forward(
        self,
        z: torch.Tensor,
        volume_ids: torch.Tensor,
        partition_ids: torch.Tensor,
        view_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the loss.

        Args:
            z: ``(M, D)`` global embeddings (after the projection head g1).
            volume_ids: ``(M,)`` integer volume ids.
            partition_ids: ``(M,)`` integer partition ids in ``[0, S)``.
            view_ids: optional ``(M,)`` view index; if given, (volume, partition, view) must be
                unique, which catches batches with two different slices of one partition.

        Returns:
            Scalar loss; 0 (keeping the graph) when the batch has no positive pair.
        """
        if z.ndim != 2 or volume_ids.shape != (z.shape[0],) or partition_ids.shape != (z.shape[0],):
            raise ValueError("expected z (M, D), volume_ids (M,), partition_ids (M,)")
        if view_ids is not None:
            if view_ids.shape != (z.shape[0],):
                raise ValueError("view_ids must be (M,)")
            _check_unique_views(volume_ids, partition_ids, view_ids)
        _, world = distributed_world()
        if self.gather_distributed and world > 1:
            keys, offset = gather_with_grad(z)  # (M_total, D)
            vol, _ = gather_with_grad(volume_ids.long())  # (M_total,)
            part, _ = gather_with_grad(partition_ids.long())  # (M_total,)
        else:
            keys, vol, part, offset, world = z, volume_ids, partition_ids, 0, 1
        pos, neg = pair_masks(vol, part, self.strategy)  # (M_total, M_total) each
        rows = slice(offset, offset + z.shape[0])
        logits = cosine_logits(z, keys, self.temperature)  # (M, M_total)
        total_pairs = int(pos.sum())
        if total_pairs == 0:
            return z.sum() * 0.0
        return pair_loss_sum(logits, pos[rows], neg[rows]) * (world / total_pairs)
