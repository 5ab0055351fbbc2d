"""Shared machinery of the restoration objectives (``regression``, ``genesis``, ``mae``).

The whole U-Net restores the clean patch from a corrupted copy; the network's full-resolution
head has as many output channels as the image has input channels. Corruption runs per image in
the background workers (:class:`~sslunet.ssl.views.CorruptionTransform`) after random
mirroring along every axis (the flip augmentation of Models Genesis, applied to input and
target alike; our choice for all three objectives).
"""

from __future__ import annotations

from typing import Sequence

import torch
from batchgenerators.transforms.abstract_transforms import Compose
from batchgenerators.transforms.spatial_transforms import MirrorTransform
from batchgenerators.transforms.utility_transforms import NumpyToTensor

from sslunet.data.loader import BatchStream
from sslunet.ssl.objectives.base import PretrainObjective
from sslunet.ssl.views import Corruption, CorruptionTransform, patch_stream


class RestorationObjective(PretrainObjective):
    """Base of the restoration objectives: encoder + decoder + full-resolution output head.

    Batches: ``data`` (B, C, *patch) corrupted, ``target`` (B, C, *patch) clean, and for
    masked modelling ``mask`` (B, 1, *patch) bool. ``forward`` returns ``{"loss"}``.

    Optimisation defaults are nnU-Net's / nnssl's (SGD, Nesterov momentum 0.99, lr 1e-2,
    polynomial decay), shared with fine-tuning.
    """

    def corruption(self) -> Corruption:
        """The per-image corruption ``(image, rng) -> (corrupted, mask or None)``."""
        raise NotImplementedError

    def restoration_loss(self, pred: torch.Tensor, batch: dict) -> torch.Tensor:
        """Loss of the ``(B, C, *patch)`` reconstruction against ``batch["target"]``."""
        raise NotImplementedError

    def forward(self, batch: dict) -> dict:
        pred = self.network(batch["data"])  # (B, C, *patch), full resolution only
        return {"loss": self.restoration_loss(pred.float(), batch)}

    def trainable_modules(self) -> tuple[str, ...]:
        net = self.network
        return tuple(f"network.{p}" for p in (net.encoder_part, *net.decoder_parts(),
                                              net.head_part(0)))

    def transferable_prefixes(self) -> tuple[str, ...]:
        # the output head maps to image channels, useless for segmentation: never transferred
        return tuple(f"{p}." for p in (self.network.encoder_part, *self.network.decoder_parts()))

    def make_stream(self, case_ids: Sequence[str], batch_size: int, seed: int, train: bool,
                    num_workers: int, pin: bool) -> BatchStream:
        """Patches of the plan's size, mirrored, corrupted; ``batch_size`` patches per batch."""
        axes = tuple(range(self.setup.config.ndim))
        transform = Compose([MirrorTransform(axes), CorruptionTransform(self.corruption()),
                             NumpyToTensor()])
        return patch_stream(self.setup, case_ids, batch_size, seed, transform, num_workers, pin)
