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

    With ``ignore_label`` the voxels carrying it count in no term (nnU-Net's loss mask for
    sparse labels): TP, FP and FN sum over annotated voxels only.

    Shapes: ``logits (B, K, *S)``, ``target (B, *S)`` long.
    """

    def __init__(self, batch_dice: bool = False, smooth: float = 1e-5,
                 ignore_label: int | None = None):
        super().__init__()
        self.batch_dice, self.smooth, self.ignore_label = batch_dice, smooth, ignore_label

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target, keep = split_ignored(target, self.ignore_label)
        probs = torch.softmax(logits.float(), 1)[:, 1:]  # (B, K-1, *S)
        onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1)[:, 1:].float()  # (B, K-1, *S)
        if keep is not None:
            probs, onehot = probs * keep[:, None], onehot * keep[:, None]
        axes = tuple(range(2, logits.ndim))
        tp = (probs * onehot).sum(axes)  # (B, K-1)
        fp = (probs * (1 - onehot)).sum(axes)
        fn = ((1 - probs) * onehot).sum(axes)
        if self.batch_dice:
            tp, fp, fn = tp.sum(0), fp.sum(0), fn.sum(0)
        dice = (2 * tp + self.smooth) / (2 * tp + fp + fn + self.smooth).clamp_min(1e-8)
        return 1 - dice.mean()


class DiceCELoss(nn.Module):
    """``CE + SoftDice`` (weights 1 and 1), nnU-Net's default segmentation loss; voxels labelled
    ``ignore_label`` count in neither (CE averages over the annotated voxels only)."""

    def __init__(self, batch_dice: bool = False, ignore_label: int | None = None):
        super().__init__()
        self.dice = SoftDiceLoss(batch_dice, ignore_label=ignore_label)
        self.ignore_label = ignore_label

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.ignore_label is not None and not (target != self.ignore_label).any():
            return logits.sum() * 0.0  # nothing annotated in this batch: no signal, no NaN
        ce = F.cross_entropy(logits.float(), target, ignore_index=-100 if self.ignore_label
                             is None else self.ignore_label)
        return ce + self.dice(logits, target)


def split_ignored(target: torch.Tensor, ignore_label: int | None
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(target with ignored voxels set to background, float mask of annotated voxels)``; the
    mask is None without an ignore label. Shapes: ``target (B, *S)`` -> ``(B, *S)``, ``(B, *S)``."""
    if ignore_label is None:
        return target, None
    keep = target != ignore_label
    return torch.where(keep, target, torch.zeros_like(target)), keep.float()


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


def foreground_confusion(logits: torch.Tensor, target: torch.Tensor,
                         ignore_label: int | None = None) -> tuple[torch.Tensor, ...]:
    """Hard TP, FP, FN counts per foreground class, summed over the batch: three (K-1,);
    voxels labelled ``ignore_label`` are not counted."""
    k = logits.shape[1]
    target, keep = split_ignored(target, ignore_label)
    pred = logits.argmax(1)
    p = F.one_hot(pred, k).movedim(-1, 1)[:, 1:].bool()  # (B, K-1, *S)
    t = F.one_hot(target, k).movedim(-1, 1)[:, 1:].bool()
    if keep is not None:
        p, t = p & keep[:, None].bool(), t & keep[:, None].bool()
    axes = (0,) + tuple(range(2, p.ndim))
    return (p & t).sum(axes), (p & ~t).sum(axes), (~p & t).sum(axes)
