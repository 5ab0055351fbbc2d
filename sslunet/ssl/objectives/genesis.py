"""``genesis``: Models Genesis restoration with the whole U-Net and an L2 loss.

Paper: Zhou et al., "Models Genesis: Generic Autodidactic Models for 3D Medical Image
Analysis" (MICCAI 2019; Medical Image Analysis 67, 2021). Each image gets, in the reference
order and with the reference probabilities (also nnssl's),

* local pixel shuffling (p 0.5),
* a monotone non-linear intensity curve (cubic Bezier, p 0.9),
* in-painting or out-painting (p 0.9; out-painting 80 % of those),

and the network restores it::

    loss = mean over voxels and channels of (f(g(x)) - x)^2

Our choices (see :mod:`sslunet.ssl.corruptions`): images are z-scored, so the intensity curve
and the paint noise act on each channel's own [min, max]; at least one paint box is drawn;
the reference's flip is the mirroring augmentation of the pipeline. Shapes: input/target
``(B, C, *patch)``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import numpy as np
import torch

from sslunet.ssl.corruptions import genesis_corrupt
from sslunet.ssl.losses import ReconstructionLoss
from sslunet.ssl.objectives._restoration import RestorationObjective
from sslunet.ssl.objectives.options import option, require
from sslunet.ssl.objectives.registry import register_objective
from sslunet.utils.argtypes import probability


@dataclass(frozen=True)
class GenesisOptions:
    """Probabilities of each corruption step (Models Genesis defaults)."""

    p_nonlinear: float = option(0.9, "probability of the non-linear intensity curve",
                                probability)
    p_local_shuffle: float = option(0.5, "probability of local pixel shuffling", probability)
    p_paint: float = option(0.9, "probability of in- or out-painting", probability)
    p_outpaint: float = option(0.8, "probability of out-painting, given painting", probability)

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            require(0.0 <= value <= 1.0, f.name, f"must be in [0, 1], got {value}")


def _genesis(image: np.ndarray, rng: np.random.Generator, options: GenesisOptions):
    out = genesis_corrupt(image, rng, p_nonlinear=options.p_nonlinear,
                          p_local_shuffle=options.p_local_shuffle, p_paint=options.p_paint,
                          p_outpaint_given_paint=options.p_outpaint)
    return out, None


@register_objective("genesis")
class GenesisObjective(RestorationObjective):
    """Models Genesis (see the module docstring)."""

    Options = GenesisOptions

    def __init__(self, network, setup, options: GenesisOptions):
        super().__init__(network, setup, options)
        self.loss_fn = ReconstructionLoss("mse")

    def corruption(self):
        return functools.partial(_genesis, options=self.options)

    def restoration_loss(self, pred: torch.Tensor, batch: dict) -> torch.Tensor:
        return self.loss_fn(pred, batch["target"])

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), "loss": "mse"}
