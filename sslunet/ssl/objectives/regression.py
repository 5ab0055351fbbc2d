"""``regression``: context restoration with the whole U-Net and an L2 loss.

Paper: Umapathy et al. (2022), "Learning to segment with limited annotations: self-supervised
pretraining with regression and contrastive loss in MRI" (arXiv 2205.13109; ISMRM 2022 #3914).
Its regression pretext task "exploits spatial dependencies within an image", but the paper
does not publish the corruption, sizes or architecture. **Our choice** (an approximation,
labelled as such in the docs): the context restoration of Chen et al. (2019, "Self-supervised
learning for medical image analysis using image context restoration", Medical Image Analysis
58), as in Chaitanya et al.'s code: swap pairs of small patches, restore the clean image::

    x~   = swap(x; N pairs of boxes of size b)          all 2N boxes mutually disjoint
    loss = mean over voxels and channels of (f(x~) - x)^2

Defaults where Chen et al. worked on 2D slices of about 192^2 with N = 10 pairs of 5x5
patches (1.36 % of the slice inside swapped boxes): the box is isotropic in millimetres,
5 voxels along the finest axis of the configuration's spacing (``round(5 * min spacing /
spacing)`` per axis, so an 8 mm slice axis gets 1 voxel next to 1.25 mm in-plane voxels);
``N`` keeps the swapped share at 1.36 % of the patch (10 pairs on a 192^2 slice), at least 1
and at most 256. Shapes: input/target ``(B, C, *patch)``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from sslunet.errors import InputError
from sslunet.ssl.corruptions import context_restoration
from sslunet.ssl.losses import ReconstructionLoss
from sslunet.ssl.objectives._restoration import RestorationObjective
from sslunet.ssl.objectives.options import option, per_axis, require
from sslunet.ssl.objectives.registry import register_objective
from sslunet.utils.argtypes import positive_int, positive_int_tuple

SWAPPED_SHARE = 2 * 10 * 5 * 5 / 192**2  # Chen et al.'s setting: 20 boxes of 5x5 in 192^2
SWAP_EDGE = 5  # voxels along the finest axis (Chen et al.'s 5x5 boxes)
MAX_DEFAULT_SWAPS = 256
MAX_COVERED = 0.25  # share of the patch the swapped boxes may cover


@dataclass(frozen=True)
class RegressionOptions:
    """How many pairs of boxes are swapped, and how large they are (None: the defaults derived
    from the patch and the spacing, see the module docstring)."""

    num_swaps: int | None = option(
        None, "pairs of boxes swapped per image", positive_int,
        default_text=f"as many as cover {SWAPPED_SHARE:.2%} of the patch, 1 to "
                     f"{MAX_DEFAULT_SWAPS}")
    swap_size: tuple[int, ...] | None = option(
        None, "swapped box edge, N or Z,Y,X", positive_int_tuple,
        default_text=f"{SWAP_EDGE} voxels along the finest axis, the same mm along the others")

    def __post_init__(self):
        require(self.num_swaps is None or self.num_swaps >= 1, "num_swaps",
                f"must be >= 1, got {self.num_swaps}")
        require(self.swap_size is None or min(self.swap_size) >= 1, "swap_size",
                f"must be positive, got {self.swap_size}")


def default_swap_size(spacing, patch) -> tuple[int, ...]:
    """5 voxels along the finest axis, the same extent in mm along the others."""
    finest = min(spacing)
    return tuple(max(1, min(p, round(SWAP_EDGE * finest / s))) for s, p in zip(spacing, patch))


def default_num_swaps(patch, box) -> int:
    """Pairs so that the boxes cover :data:`SWAPPED_SHARE` of the patch."""
    n = round(SWAPPED_SHARE * math.prod(patch) / (2 * math.prod(box)))
    return int(min(MAX_DEFAULT_SWAPS, max(1, n)))


def _swap(image: np.ndarray, rng: np.random.Generator, num_swaps: int, size: tuple[int, ...]):
    return context_restoration(image, rng, num_swaps, size), None


@register_objective("regression")
class RegressionObjective(RestorationObjective):
    """Context restoration (see the module docstring for the loss and our choices)."""

    Options = RegressionOptions

    def __init__(self, network, setup, options: RegressionOptions):
        super().__init__(network, setup, options)
        cfg = setup.config
        self.swap_size = per_axis(self.name, "swap_size", options.swap_size
                                  or default_swap_size(cfg.spacing, cfg.patch_size), cfg.ndim)
        self.num_swaps = options.num_swaps or default_num_swaps(cfg.patch_size, self.swap_size)
        covered = 2 * self.num_swaps * math.prod(self.swap_size) / math.prod(cfg.patch_size)
        if any(b > p for b, p in zip(self.swap_size, cfg.patch_size)) or covered > MAX_COVERED:
            # random placement of disjoint boxes would fail (or loop long) inside the workers
            raise InputError(f"{self.num_swaps} pairs of {self.swap_size} boxes do not fit in "
                             f"the {tuple(cfg.patch_size)} patch (at most {MAX_COVERED:.0%} "
                             "covered); lower --num-swaps or --swap-size")
        self.loss_fn = ReconstructionLoss("mse")

    def corruption(self):
        return functools.partial(_swap, num_swaps=self.num_swaps, size=self.swap_size)

    def restoration_loss(self, pred: torch.Tensor, batch: dict) -> torch.Tensor:
        return self.loss_fn(pred, batch["target"])

    def hyperparameters(self) -> dict:
        return {"num_swaps": self.num_swaps, "swap_size": list(self.swap_size), "loss": "mse",
                "corruption": "context restoration (Chen et al. 2019)"}
