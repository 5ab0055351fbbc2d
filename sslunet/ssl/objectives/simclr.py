"""``simclr``: global contrastive learning on the encoder (SimCLR; Chaitanya et al.'s G^R).

Papers: Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations"
(ICML 2020); Chaitanya et al., "Contrastive learning of global and local features for medical
image segmentation with limited annotations" (NeurIPS 2020), whose G^R baseline this is, and the
contrastive arm of Umapathy et al. (2022). Each patch gets two augmented views ``v1, v2``
(random resized in-plane crop + brightness/contrast/gamma/noise/blur, built in the background
workers); the encoder's bottleneck is average-pooled to a grid of at most 4 cells per axis,
flattened and projected by g1 (Linear -> 1024, ReLU, Linear 1024 -> 128, no biases, as
Chaitanya et al.)::

    z_i  = g1(vec(pool_grid(e(v_i))))                              (2N, 128)
    loss = NT-Xent(z_1, z_2; tau) = 1/(2N) sum_i -log( e^{s_i,p(i)} / sum_{k != i} e^{s_ik} )

with ``s = cos / tau``, tau = 0.1 (Chaitanya et al.; nnssl and MONAI use 0.5). Under torchrun
the embeddings are gathered across processes, so the negatives grow with the world size.

Our choices: grid pooling before flattening (Chaitanya et al. flatten the whole bottleneck; a
global average would discard almost everything, see :func:`~sslunet.ssl.objectives.base.
grid_pool`); crop fraction per in-plane axis uniform in [0.5, 1] (Chaitanya et al.: a fixed
100/192 crop); Adam(W) lr 1e-3 for 40 x 250 = 10 000 iterations (their stage length).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from sslunet.data.loader import BatchStream
from sslunet.ssl.losses import NTXentLoss
from sslunet.ssl.heads import ProjectionHead, grid_pool, pooled_grid, seeded
from sslunet.ssl.objectives.base import PretrainObjective, full_precision
from sslunet.ssl.objectives.options import check_choices, option, require
from sslunet.ssl.objectives.registry import register_objective
from sslunet.ssl.two_views import contrastive_view_transforms
from sslunet.ssl.views import patch_stream
from sslunet.utils.argtypes import float_range, positive_float, positive_int

CONTRASTIVE_TRAINING = {"optimizer": "adamw", "lr": 1e-3, "epochs": 40}


@dataclass(frozen=True)
class TwoViewContrastiveOptions:
    """What every two-view contrastive objective sets (``simclr``, ``contrastive``, ``refs``:
    their options classes extend this one, so the names in ``pretrain_config.json`` agree)."""

    temperature: float = option(0.1, "temperature tau of the contrastive loss", positive_float)
    proj_dim: int = option(128, "projection output width", positive_int)
    proj_hidden: int = option(1024, "hidden width of the global projection head", positive_int)
    crop_min: float = option(0.5, "smallest crop fraction per in-plane axis of a view (the "
                                  "largest is 1)", float_range(0.0, 1.0, low_open=True))

    def __post_init__(self):
        require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        require(self.proj_dim >= 1, "proj_dim", f"must be >= 1, got {self.proj_dim}")
        require(self.proj_hidden >= 1, "proj_hidden", f"must be >= 1, got {self.proj_hidden}")
        require(0.0 < self.crop_min <= 1.0, "crop_min", f"must be in (0, 1], got {self.crop_min}")
        check_choices(self)


@dataclass(frozen=True)
class SimCLROptions(TwoViewContrastiveOptions):
    """SimCLR has exactly the shared two-view options."""


class GlobalHead(nn.Module):
    """g1 on the grid-pooled bottleneck: ``(N, C, *S_bottleneck) -> (N, proj_dim)``.

    Args:
        channels: bottleneck channels.
        bottleneck: bottleneck spatial shape (patch // total stride).
        hidden: hidden width (1024).
        out: embedding width (128).
    """

    def __init__(self, channels: int, bottleneck: Sequence[int], hidden: int, out: int):
        super().__init__()
        self.grid = pooled_grid(bottleneck)
        self.mlp = ProjectionHead(channels * math.prod(self.grid), hidden, out)

    def forward(self, bottleneck: torch.Tensor) -> torch.Tensor:
        return self.mlp(grid_pool(bottleneck, self.grid).float())


def global_head(setup, options, seed_offset: int = 1) -> GlobalHead:
    """g1 for the configuration's bottleneck, initialised from ``setup.seed + seed_offset``."""
    cfg = setup.config
    bottleneck = [p // d for p, d in zip(cfg.patch_size, cfg.total_downsampling)]
    return seeded(setup.seed + seed_offset, lambda: GlobalHead(
        cfg.features_per_stage[-1], bottleneck, options.proj_hidden, options.proj_dim))


def pooled_embedding(network: nn.Module, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(N, C, *patch) -> (N, D)``: bottleneck features, grid-pooled, projected."""
    return head(network.encode(x)[-1])


def two_view_embeddings(network, head, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Embed both views in one pass: ``(z1, z2)``, each ``(N, D)``."""
    views = torch.cat([batch["data_view1"], batch["data_view2"]])  # (2N, C, *patch)
    z = pooled_embedding(network, head, views)  # (2N, D)
    return z.chunk(2)


@register_objective("simclr")
class SimCLRObjective(PretrainObjective):
    """SimCLR / G^R (see the module docstring). ``batch_size`` = patches, each with 2 views."""

    Options = SimCLROptions
    default_training = CONTRASTIVE_TRAINING
    min_batch_size = 2

    def __init__(self, network, setup, options: SimCLROptions):
        super().__init__(network, setup, options)
        self.projection = global_head(setup, options)
        self.loss_fn = NTXentLoss(options.temperature)

    def forward(self, batch: dict) -> dict:
        z1, z2 = two_view_embeddings(self.network, self.projection, batch)
        with full_precision(z1):
            return {"loss": self.loss_fn(z1.float(), z2.float())}

    def trainable_modules(self) -> tuple[str, ...]:
        return (f"network.{self.network.encoder_part}", "projection")

    def transferable_prefixes(self) -> tuple[str, ...]:
        return (f"{self.network.encoder_part}.",)

    def make_stream(self, case_ids: Sequence[str], batch_size: int, seed: int, train: bool,
                    num_workers: int, pin: bool) -> BatchStream:
        transform = contrastive_view_transforms((self.options.crop_min, 1.0))
        return patch_stream(self.setup, case_ids, batch_size, seed, transform, num_workers, pin)
