"""Segmentation loss: soft Dice + cross-entropy with deep supervision (nnU-Net's DC_and_CE)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SoftDiceLoss(nn.Module):
    """``1 - mean_k (2 TP_k + s) / (2 TP_k + FP_k + FN_k + s)`` over foreground classes k.

    Soft counts use softmax probabilities. With ``batch_dice`` the counts are summed over the
    batch before the ratio (one Dice per class), else per sample (then averaged), as nnU-Net's
    ``MemoryEfficientSoftDiceLoss`` with ``do_bg=False`` and smooth 1e-5.

    Shapes: ``logits (B, K, *S)``, ``target (B, *S)`` long.
    """

    def __init__(self, batch_dice: bool = False, smooth: float = 1e-5):
        super().__init__()
        self.batch_dice, self.smooth = batch_dice, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits.float(), 1)[:, 1:]  # (B, K-1, *S)
        onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1)[:, 1:].float()  # (B, K-1, *S)
        axes = tuple(range(2, logits.ndim))
        tp = (probs * onehot).sum(axes)  # (B, K-1)
        fp = (probs * (1 - onehot)).sum(axes)
        fn = ((1 - probs) * onehot).sum(axes)
        if self.batch_dice:
            tp, fp, fn = tp.sum(0), fp.sum(0), fn.sum(0)
        dice = (2 * tp + self.smooth) / (2 * tp + fp + fn + self.smooth).clamp_min(1e-8)
        return 1 - dice.mean()


class DiceCELoss(nn.Module):
    """``CE + SoftDice`` (weights 1 and 1), nnU-Net's default segmentation loss."""

    def __init__(self, batch_dice: bool = False):
        super().__init__()
        self.dice = SoftDiceLoss(batch_dice)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target) + self.dice(logits, target)


def deep_supervision_weights(n: int) -> list[float]:
    """``1/2^i`` for output i (full resolution first), lowest resolution 0, normalised to 1."""
    w = [1 / 2 ** i for i in range(n)]
    if n > 1:
        w[-1] = 0.0
    total = sum(w)
    return [x / total for x in w]


def downsample_target(target: torch.Tensor, shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    """Nearest-neighbour copies of ``target (B, 1, *S)`` at each output's spatial shape."""
    out = []
    for shape in shapes:
        if tuple(target.shape[2:]) == tuple(shape):
            out.append(target[:, 0].long())
        else:
            t = F.interpolate(target.float(), size=shape, mode="nearest")
            out.append(t[:, 0].long())
    return out


def foreground_confusion(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Hard TP, FP, FN counts per foreground class, summed over the batch: three (K-1,)."""
    k = logits.shape[1]
    pred = logits.argmax(1)
    p = F.one_hot(pred, k).movedim(-1, 1)[:, 1:].bool()  # (B, K-1, *S)
    t = F.one_hot(target, k).movedim(-1, 1)[:, 1:].bool()
    axes = (0,) + tuple(range(2, p.ndim))
    return (p & t).sum(axes), (p & ~t).sum(axes), (~p & t).sum(axes)
