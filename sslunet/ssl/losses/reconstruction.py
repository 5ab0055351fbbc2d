"""Reconstruction losses for restoration pretext tasks.

:class:`MaskedMSELoss` is the MAE / SparK objective as in nnssl's MAE trainer (He et al. 2022;
Tian et al. 2023): the squared error counts only on masked voxels. :class:`ReconstructionLoss`
is the plain MSE / L1 of Models Genesis (Zhou et al. 2019) and context restoration (Chen et al.
2019), used by our approximation of Umapathy et al. (2022)'s regression arm.
"""

from __future__ import annotations

import torch
from torch import nn


class MaskedMSELoss(nn.Module):
    """Mean squared error over masked voxels only.

    The mean runs over masked voxels times channels. With no masked voxel in the batch the
    loss is 0 (keeping the graph, so a training step still runs).
    """

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            pred: ``(B, C, *spatial)`` reconstruction.
            target: ``(B, C, *spatial)`` original image.
            mask: ``(B, 1, *spatial)`` bool, True = masked (hidden from the network).

        Returns:
            Scalar loss.
        """
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        expected = (pred.shape[0], 1, *pred.shape[2:])
        if tuple(mask.shape) != expected:
            raise ValueError(f"mask must be {expected}, got {tuple(mask.shape)}")
        weight = mask.to(pred.dtype).expand_as(pred)  # (B, C, *spatial)
        count = weight.sum()
        if count == 0:
            return pred.sum() * 0.0
        return (((pred - target) ** 2) * weight).sum() / count


class ReconstructionLoss(nn.Module):
    """MSE or L1 over all voxels.

    Args:
        kind: ``"mse"`` or ``"l1"``.
    """

    def __init__(self, kind: str = "mse"):
        super().__init__()
        if kind not in ("mse", "l1"):
            raise ValueError(f"kind must be 'mse' or 'l1', got {kind!r}")
        self.kind = kind

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            pred: ``(B, C, *spatial)`` reconstruction.
            target: ``(B, C, *spatial)`` clean image.

        Returns:
            Scalar mean over all elements.
        """
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        diff = pred - target
        return (diff * diff).mean() if self.kind == "mse" else diff.abs().mean()
