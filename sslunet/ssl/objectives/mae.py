"""``mae``: masked image modelling for convolutional U-Nets (SparK / nnssl style).

Papers: He et al., "Masked Autoencoders Are Scalable Vision Learners" (CVPR 2022); Tian et
al., "Designing BERT for Convolutional Networks: Sparse and Hierarchical Masked Modeling"
(SparK, ICLR 2023); as used for 3D medical images by MIC-DKFZ's nnssl. A random
``mask_ratio`` of the blocks that tile the patch is hidden; the network sees the image with
masked voxels set to 0 (the mean of z-scored images; dense convolutions as in nnssl, not
SparK's sparse ones) and is trained to regress the masked voxels only::

    x~   = x * (1 - M)                         M: (B, 1, *patch) block mask, 1 = masked
    loss = sum(M * (f(x~) - x)^2) / (C * sum(M))

Our choices: mask ratio 0.6 (SparK's; nnssl uses 0.75); blocks of ``patch // 8`` voxels per
axis (at least 1), so an anisotropic patch gets anisotropic blocks and every patch has 8
blocks per axis (64 in 2d, 512 in 3d); nnssl uses 16^3 blocks on 160^3 patches (1/10).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from sslunet.ssl.masking import apply_mask, block_mask
from sslunet.ssl.losses import MaskedMSELoss
from sslunet.ssl.objectives._restoration import RestorationObjective
from sslunet.ssl.objectives.options import option, per_axis, require
from sslunet.ssl.objectives.registry import register_objective
from sslunet.utils.argtypes import float_range, positive_int_tuple

BLOCKS_PER_AXIS = 8


@dataclass(frozen=True)
class MAEOptions:
    """How much of the patch is hidden, in blocks of which size."""

    mask_ratio: float = option(0.6, "share of the blocks masked", float_range(0.0, 1.0, True, True))
    block_size: tuple[int, ...] | None = option(
        None, "block edge, N or Z,Y,X", positive_int_tuple,
        default_text=f"patch // {BLOCKS_PER_AXIS} per axis")

    def __post_init__(self):
        require(0.0 < self.mask_ratio < 1.0, "mask_ratio",
                f"must be in (0, 1), got {self.mask_ratio}")
        require(self.block_size is None or min(self.block_size) >= 1, "block_size",
                f"must be positive, got {self.block_size}")


def default_block_size(patch) -> tuple[int, ...]:
    return tuple(max(1, p // BLOCKS_PER_AXIS) for p in patch)


def _mask(image: np.ndarray, rng: np.random.Generator, block: tuple[int, ...], ratio: float):
    mask = block_mask(image.shape[1:], block, ratio, rng)  # (1, *S)
    return apply_mask(image, mask, 0.0), mask


@register_objective("mae")
class MAEObjective(RestorationObjective):
    """Masked image modelling (see the module docstring)."""

    Options = MAEOptions

    def __init__(self, network, setup, options: MAEOptions):
        super().__init__(network, setup, options)
        cfg = setup.config
        self.block_size = per_axis(self.name, "block_size",
                                   options.block_size or default_block_size(cfg.patch_size),
                                   cfg.ndim)
        self.loss_fn = MaskedMSELoss()

    def corruption(self):
        return functools.partial(_mask, block=self.block_size, ratio=self.options.mask_ratio)

    def restoration_loss(self, pred: torch.Tensor, batch: dict) -> torch.Tensor:
        return self.loss_fn(pred, batch["target"], batch["mask"])

    def hyperparameters(self) -> dict:
        return {"mask_ratio": self.options.mask_ratio, "block_size": list(self.block_size),
                "mask_fill": 0.0, "loss": "masked mse"}
