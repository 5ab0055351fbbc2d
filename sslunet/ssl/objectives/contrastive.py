"""``contrastive``: Chaitanya et al.'s global (G^D) then local (L^R) contrastive pretraining.

Paper: Chaitanya, Erdil, Karani, Konukoglu, "Contrastive learning of global and local features
for medical image segmentation with limited annotations" (NeurIPS 2020); the clean version of
our notes, not the reference code's quirks (zero-padded rows, per-batch intensity draws).

Stage 1, ``global`` (encoder e + head g1; folder ``stage1_global/``). A batch holds ``m``
volumes x ``S`` partitions (S = 4 runs of consecutive slices along the slice axis, the first
transposed axis; 3d: sub-volumes along that axis), one slice or sub-volume per partition, each
with two augmented views (crop + intensity). With ``z = g1(mean_space(e(x)))``, s = cos/tau::

    l(a, p) = -log( e^{s_ap} / (e^{s_ap} + sum_{k in neg(a)} e^{s_ak}) )
    G^D : p in pos(a) = every other image of a's partition (any volume, any view)
    G^D-: p in pos(a) = the other view of a's own slice only
    neg(a) = images of another partition;  loss = mean over ordered positive pairs

Stage 2, ``local`` (folder ``stage2_local/``): the encoder is frozen (``requires_grad`` off,
run without a graph); the decoder blocks from the bottleneck up to the level ``L`` (default:
the first level at 1/4 of the in-plane resolution; the paper: 3 of 5 blocks, 1/4) and the head
g2 are trained. Two intensity-only views keep the geometry, so the same region of the level-L
feature map of both views is a positive pair::

    h      = g2(f_L(x))   g2: 1x1 conv, InstanceNorm, LeakyReLU, 1x1 conv
    e_r    = W vec(h[region r])                  (R regions of 3x3(x3), Chaitanya's layout)
    loss   = mean over ordered positive pairs of l(a, p) on region embeddings
    L^R: positive = same region, other view; negatives = the 5 regions with the nearest
         corners (our stand-in for the paper's hard-coded table), from both views
    L^D: as L^R, plus the same region of same-partition images of other volumes

Our choices: InstanceNorm in g2 (the U-Net's normalisation; the paper uses batch norm); both
views augmented (the code pairs an original with one augmented copy); the epochs are split
between the stages by ``local_epochs_fraction`` (default half/half; the paper runs 10 001
iterations each); Adam(W) lr 1e-3 in both stages as the paper. The final checkpoint holds the
encoder and the trained decoder blocks; heads are never transferred.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from sslunet.data.loader import BatchStream, make_loader
from sslunet.ssl.heads import seeded
from sslunet.ssl.losses import GlobalDomainContrastiveLoss, LocalContrastiveLoss
from sslunet.ssl.objectives.base import PretrainObjective, Stage, full_precision
from sslunet.ssl.objectives.options import OptionError, option, require
from sslunet.ssl.objectives.registry import register_objective
from sslunet.ssl.objectives.simclr import (
    CONTRASTIVE_TRAINING, TwoViewContrastiveOptions, global_head, pooled_embedding,
)
from sslunet.ssl.two_views import contrastive_view_transforms, unmirror
from sslunet.ssl.regions import extract_regions, nearest_region_table, region_corners
from sslunet.ssl.views import PartitionBatchLoader, patch_stream
from sslunet.utils.argtypes import float_range, nonnegative_int, positive_int

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_NORM = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}


@dataclass(frozen=True)
class ContrastiveOptions(TwoViewContrastiveOptions):
    """Hyper-parameters of both stages; temperature, proj_* and crop_min as in ``simclr``."""

    strategy: str = option("GD", "global loss: positives from the same partition of every "
                                 "volume (GD) or the other view only (GD-)", choices=("GD", "GD-"))
    partitions: int = option(4, "partitions per volume", positive_int)
    local_epochs_fraction: float = option(0.5, "share of the epochs for the local stage",
                                          float_range(0.0, 1.0, True, True))
    local_level: int | None = option(None, "decoder level of the local loss, 0 = full "
                                           "resolution", nonnegative_int,
                                     default_text="the first level at 1/4 in-plane resolution")
    local_variant: str = option("LR", "local loss: positives from the other view (LR) or also "
                                      "from same-partition images (LD)", choices=("LR", "LD"))
    local_negatives: int = option(5, "nearest regions used as negatives, 0 = all other regions",
                                  nonnegative_int)
    region_size: int = option(3, "local region edge", positive_int)
    local_views: str = option("mirror", "local stage: view 2 also mirrored, features mapped back "
                                        "(mirror, ours), or intensity-only views as the paper "
                                        "(intensity)", choices=("mirror", "intensity"))
    local_negatives_from: str = option("batch", "local stage: negatives from the anchor's own "
                                                "image (image, the paper) or also every region "
                                                "of the batch's other images (batch, ours)",
                                       choices=("image", "batch"))

    def __post_init__(self):
        super().__post_init__()
        require(self.partitions >= 1, "partitions", f"must be >= 1, got {self.partitions}")
        require(0.0 < self.local_epochs_fraction < 1.0, "local_epochs_fraction",
                f"must be in (0, 1), got {self.local_epochs_fraction}")
        require(self.local_negatives >= 0, "local_negatives",
                f"must be >= 0, got {self.local_negatives}")
        require(self.region_size >= 1, "region_size", f"must be >= 1, got {self.region_size}")


def cumulative_strides(strides: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """Downsampling of every encoder stage relative to the input, per axis."""
    out, acc = [], [1] * len(strides[0])
    for s in strides:
        acc = [a * b for a, b in zip(acc, s)]
        out.append(tuple(acc))
    return out


def default_local_level(strides: Sequence[Sequence[int]]) -> int:
    """First decoder level at >= 1/4 in-plane resolution (the deepest level if none is)."""
    cum = cumulative_strides(strides)
    deepest = len(strides) - 2
    return next((lvl for lvl in range(deepest + 1) if max(cum[lvl][-2:]) >= 4), deepest)


class LocalHead(nn.Module):
    """g2: 1x1 conv, InstanceNorm, LeakyReLU, 1x1 conv; regions flattened and projected.

    Input ``(B, C, *S)``; output ``(B, R, out_dim)`` for the ``R`` regions at ``corners``.
    """

    def __init__(self, ndim: int, channels: int, region: tuple[int, ...], corners, out_dim: int):
        super().__init__()
        conv = _CONV[ndim]
        self.convs = nn.Sequential(
            conv(channels, channels, 1, bias=False), _NORM[ndim](channels, affine=True),
            nn.LeakyReLU(0.01, inplace=True), conv(channels, channels, 1, bias=False))
        self.region, self.corners = region, corners
        self.proj = nn.Linear(channels * math.prod(region), out_dim, bias=False)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        regions = extract_regions(self.convs(f), self.region, self.corners)  # (B, R, C*|r|)
        return self.proj(regions.float())  # (B, R, out_dim)


@register_objective("contrastive")
class ContrastiveObjective(PretrainObjective):
    """G^D (or G^D-) on the encoder, then L^R (or L^D) on the decoder (module docstring)."""

    Options = ContrastiveOptions
    default_training = {**CONTRASTIVE_TRAINING, "epochs": 80}

    def __init__(self, network, setup, options: ContrastiveOptions):
        super().__init__(network, setup, options)
        cfg = setup.config
        deepest = cfg.num_stages - 2
        level = default_local_level(cfg.pool_op_kernel_sizes) if options.local_level is None \
            else options.local_level
        if not 0 <= level <= deepest:
            raise OptionError(self.name, "local_level", f"must be in [0, {deepest}] for "
                              f"configuration '{cfg.name}', got {level}")
        self.level = level
        self.decoder_levels = tuple(range(level, deepest + 1))  # decoded for the local loss
        down = cumulative_strides(cfg.pool_op_kernel_sizes)[level]
        self.feature_shape = tuple(p // d for p, d in zip(cfg.patch_size, down))
        region = tuple(min(options.region_size, n) for n in self.feature_shape)
        corners = region_corners(self.feature_shape, region, "chaitanya")
        self.global_projection = global_head(setup, options)
        self.local_head = seeded(setup.seed + 2, lambda: LocalHead(
            cfg.ndim, cfg.features_per_stage[level], region, corners, options.proj_dim))
        k = options.local_negatives
        table = nearest_region_table(corners, k) if 0 < k < len(corners) - 1 else None
        self.register_buffer("negative_table", table, persistent=False)
        self.global_loss = GlobalDomainContrastiveLoss(options.temperature, options.strategy)
        self.local_loss = LocalContrastiveLoss(options.temperature, options.local_variant,
                                               options.local_negatives_from == "batch")

    # ------------------------------------------------------------------ stages
    def stages(self) -> tuple[Stage, ...]:
        f = self.options.local_epochs_fraction
        return (Stage("global", "stage1_global", 1.0 - f), Stage("local", "stage2_local", f))

    def _decoder_parts(self) -> tuple[str, ...]:
        return self.network.decoder_parts(self.decoder_levels)

    def trainable_modules(self) -> tuple[str, ...]:
        if self.stage == "global":
            return (f"network.{self.network.encoder_part}", "global_projection")
        return (*(f"network.{p}" for p in self._decoder_parts()), "local_head")

    def trained_modules(self) -> tuple[str, ...]:
        if self.stage == "global":
            return self.trainable_modules()
        return (f"network.{self.network.encoder_part}", "global_projection",
                *self.trainable_modules())

    def transferable_prefixes(self) -> tuple[str, ...]:
        parts = (self.network.encoder_part,)
        if self.stage == "local":
            parts += self._decoder_parts()
        return tuple(f"{p}." for p in parts)

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), "local_level": self.level,
                "local_feature_shape": list(self.feature_shape),
                "local_region_size": list(self.local_head.region),
                "num_regions": len(self.local_head.corners),
                "trained_decoder_blocks": sorted(
                    self.network.num_decoder_levels - 1 - lvl for lvl in self.decoder_levels)}

    # ------------------------------------------------------------------ forward
    def forward(self, batch: dict) -> dict:
        if self.stage == "global":
            return {"loss": self._global(batch)}
        return {"loss": self._local(batch)}

    def _global(self, batch: dict) -> torch.Tensor:
        views = torch.cat([batch["data_view1"], batch["data_view2"]])  # (2M, C, *patch)
        z = pooled_embedding(self.network, self.global_projection, views)  # (2M, D)
        m = batch["data_view1"].shape[0]
        vol = batch["volume_ids"].long().repeat(2)  # (2M,)
        part = batch["partition_ids"].long().repeat(2)  # (2M,)
        view = torch.arange(2, device=z.device).repeat_interleave(m)  # (2M,) 0...0 1...1
        with full_precision(z):
            return self.global_loss(z.float(), vol, part, view)

    def _local(self, batch: dict) -> torch.Tensor:
        views = torch.cat([batch["data_view1"], batch["data_view2"]])  # (2B, C, *patch)
        with torch.no_grad():  # frozen encoder: no graph through it
            skips = self.network.encode(views)
        f1, f2 = self.network.decode_to(skips, self.level).chunk(2)  # (B, C, *S) each
        if "view2_flips" in batch:  # mirrored view 2: map its features back onto view 1's grid
            f2 = unmirror(f2, batch["view2_flips"], batch["view2_flips"].shape[1])
        e1, e2 = self.local_head(torch.cat([f1, f2])).chunk(2)  # (B, R, D) each
        parts = batch["partition_ids"].long() if self.options.local_variant == "LD" else None
        with full_precision(e1):
            return self.local_loss(e1.float(), e2.float(), parts, self.negative_table)

    # ------------------------------------------------------------------ data
    def make_stream(self, case_ids: Sequence[str], batch_size: int, seed: int, train: bool,
                    num_workers: int, pin: bool) -> BatchStream:
        """Global stage and L^D: ``batch_size // S`` volumes (at least 1) x S partitions;
        L^R: ``batch_size`` random patches. Views: crop + intensity (global), intensity only
        (local)."""
        opts, cfg = self.options, self.setup.config
        local = self.stage == "local"
        transform = contrastive_view_transforms(None if local else (opts.crop_min, 1.0),
                                                mirror_view2=local and opts.local_views == "mirror")
        if local and opts.local_variant == "LR":
            return patch_stream(self.setup, case_ids, batch_size, seed, transform, num_workers,
                                pin)
        loader = PartitionBatchLoader(self.setup.folder, case_ids, tuple(cfg.patch_size),
                                      max(1, batch_size // opts.partitions), cfg.ndim,
                                      opts.partitions, seed)
        return make_loader(loader, transform, num_workers, pin, seed)
