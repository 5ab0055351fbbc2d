"""The supervised objective: a network plus Dice+CE with deep supervision, as one module."""

from __future__ import annotations

import torch
from torch import nn

from sslunet.training.losses import (
    DiceCELoss, deep_supervision_weights, downsample_target, foreground_confusion,
)


class SegmentationModel(nn.Module):
    """``forward(batch) -> {"loss", and in eval mode "tp", "fp", "fn"}``.

    ``batch["data"]``: (B, C, *S) float; ``batch["seg"]``: (B, 1, *S) integer labels (no -1).
    With deep supervision the network returns one output per decoder stage (full resolution
    first); each is compared with a nearest-neighbour-downsampled target, weighted 1/2^i.
    Voxels labelled ``ignore_label`` (sparse annotations) count in no loss term and no count.
    """

    def __init__(self, network: nn.Module, batch_dice: bool, ignore_label: int | None = None):
        super().__init__()
        self.network = network
        self.ignore_label = ignore_label
        self.loss = DiceCELoss(batch_dice, ignore_label)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.network(batch["data"])
        outs = out if isinstance(out, (list, tuple)) else [out]
        targets = downsample_target(batch["seg"], [o.shape[2:] for o in outs])
        weights = deep_supervision_weights(len(outs))
        loss = sum(w * self.loss(o, t) for w, o, t in zip(weights, outs, targets) if w > 0)
        result = {"loss": loss}
        if not self.training:
            tp, fp, fn = foreground_confusion(outs[0].detach(), targets[0], self.ignore_label)
            result.update(tp=tp, fp=fp, fn=fn)
        return result
