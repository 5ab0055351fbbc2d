"""What the encoder-decoder U-Nets of this package share: the network contract of
``sslunet.networks.registry`` implemented once for any ``encoder`` (``forward(x)`` -> one tensor
per resolution stage, highest resolution first) followed by :class:`~sslunet.networks.unet.
UNetDecoder`, building from a plan, and the topology check.

Subclasses (``PlainConvUNet``, ``ResidualEncoderUNet``) build ``self.encoder`` and
``self.decoder`` and name their input conv; nothing here is registered.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from sslunet.errors import InputError
from sslunet.plans import ConfigurationPlan

Shape = tuple[int, ...]


class EncoderDecoderUNet(nn.Module):
    """The network contract (``sslunet.networks.registry``) of a U-Net made of an ``encoder``
    (``forward(x)`` -> one tensor per stage, highest resolution first) and a
    :class:`UNetDecoder`; subclasses build those two and set ``input_conv_key``.

    Args (every subclass takes them, then ``deep_supervision`` and ``seed``):
        ndim: 2 or 3 spatial dimensions.
        input_channels: image channels.
        num_classes: output channels (segmentation classes incl. background, or the input
            channels for a restoration pretext task).
        features_per_stage: channels of each resolution stage.
        strides: stride of each stage's first conv; stage 0 is normally all ones.
        kernel_sizes: conv kernel of each stage (odd sizes).
        n_conv_encoder: convs (or blocks) per encoder stage (``num_stages`` entries).
        n_conv_decoder: convs per decoder stage (``num_stages - 1`` entries, highest
            resolution first, as in nnU-Net plans).

    Raises:
        ValueError: inconsistent topology.
    """

    # ---- module names that objectives, weight transfer and per-part learning rates address.
    # Parameters that depend on the task (output classes): never loaded from pretraining.
    task_specific_prefixes = ("decoder.seg_layers.",)
    # The only conv whose weight shape depends on the number of input channels (subclasses).
    input_conv_key: str
    # forward(x) -> skips, highest resolution first (bottleneck last)
    encoder_part = "encoder"

    def __init__(self, ndim: int, input_channels: int, num_classes: int,
                 features_per_stage: Sequence[int], strides: Sequence[Shape],
                 kernel_sizes: Sequence[Shape], n_conv_encoder: Sequence[int],
                 n_conv_decoder: Sequence[int]):
        super().__init__()
        problem = topology_problem(ndim, input_channels, num_classes, features_per_stage,
                                   strides, kernel_sizes, n_conv_encoder, n_conv_decoder)
        if problem:
            raise ValueError(problem)
        self.ndim = ndim
        self.input_channels = input_channels
        self.num_classes = num_classes
        self.total_stride = tuple(math.prod(s[d] for s in strides) for d in range(ndim))

    @classmethod
    def from_plan(cls, plan: ConfigurationPlan, num_input_channels: int, num_classes: int,
                  deep_supervision: bool = True, seed: int = 0) -> "EncoderDecoderUNet":
        """Build from a configuration plan.

        Raises:
            InputError: the plan's topology is inconsistent (message names the configuration).
        """
        try:
            return cls(plan.ndim, num_input_channels, num_classes, plan.features_per_stage,
                       plan.pool_op_kernel_sizes, plan.conv_kernel_sizes,
                       plan.n_conv_per_stage_encoder, plan.n_conv_per_stage_decoder,
                       deep_supervision=deep_supervision, seed=seed)
        except ValueError as e:
            raise InputError(f"configuration '{plan.name}' cannot build {plan.network}: "
                             f"{e}") from e

    def _assemble(self, encoder: Callable[[], nn.Module], decoder: Callable[[], nn.Module],
                  initialise: Callable[[nn.Module], None]) -> None:
        """Build ``self.encoder`` and ``self.decoder``, then ``initialise(self)``. PyTorch's
        default layer init draws from the global RNG and is overwritten anyway: it runs on a
        throw-away copy of the RNG state, so the caller's stream is left untouched."""
        with torch.random.fork_rng(devices=[]):
            self.encoder, self.decoder = encoder(), decoder()
        initialise(self)

    @property
    def deep_supervision(self) -> bool:
        return self.decoder.deep_supervision

    @deep_supervision.setter
    def deep_supervision(self, enabled: bool) -> None:
        self.decoder.deep_supervision = bool(enabled)

    def set_deep_supervision(self, enabled: bool) -> None:
        """Switch between all decoder-stage logits (training) and full resolution only."""
        self.deep_supervision = enabled

    def _check_input(self, x: torch.Tensor) -> None:
        # A non-divisible size would only fail later, deep inside torch.cat, with a cryptic error.
        if x.dim() != self.ndim + 2 or x.shape[1] != self.input_channels or any(
                n % s for n, s in zip(x.shape[2:], self.total_stride)):
            raise ValueError(
                f"expected input (B, {self.input_channels}, *spatial) with {self.ndim} spatial "
                f"axes divisible by {self.total_stride}; got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor):
        """Args: x ``(B, input_channels, *spatial)``, spatial divisible by ``total_stride``.

        Returns:
            See :meth:`UNetDecoder.forward` (``return_features=False``).
        """
        self._check_input(x)
        return self.decoder(self.encoder(x))

    @property
    def num_decoder_levels(self) -> int:
        return len(self.decoder.stages)

    def _block(self, level: int) -> int:
        # the decoder's module lists run from the bottleneck up; level 0 is full resolution
        if not 0 <= level < self.num_decoder_levels:
            raise ValueError(f"decoder level {level} not in [0, {self.num_decoder_levels - 1}]")
        return self.num_decoder_levels - 1 - level

    def decoder_parts(self, levels: Sequence[int] | None = None) -> tuple[str, ...]:
        """Names of the decoder blocks (upsampling + convs, not the heads) that produce
        ``levels`` (0 = full resolution); None: the whole decoder."""
        if levels is None:
            return ("decoder.transpconvs", "decoder.stages")
        return tuple(f"decoder.{part}.{self._block(lvl)}"
                     for lvl in sorted(levels, reverse=True) for part in ("transpconvs", "stages"))

    def head_part(self, level: int = 0) -> str:
        """Name of the segmentation head (1x1 conv) at decoder level ``level``."""
        return f"decoder.seg_layers.{self._block(level)}"

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's outputs for ``x (B, C_in, *spatial)``, highest resolution first."""
        self._check_input(x)
        return self.encoder(x)

    def encoder_stages(self) -> nn.ModuleList:
        """The encoder's stages, highest resolution first."""
        return self.encoder.stages

    def decode_to(self, skips: list[torch.Tensor], level: int) -> torch.Tensor:
        """Run the decoder from the bottleneck only up to ``level`` (0 = full resolution).

        Args: skips: the encoder outputs, highest resolution first.

        Returns:
            ``(B, C_level, *skips[level].shape[2:])``, equal to ``decoder_features[level]`` of
            :meth:`forward_with_features`.
        """
        dec, x = self.decoder, skips[-1]
        for s in range(self._block(level) + 1):
            # (B, C_below, *S_below) -> up -> (B, C_skip, *S_skip); concat -> (B, 2C_skip, *S_skip)
            x = dec.stages[s](torch.cat((dec.transpconvs[s](x), skips[-(s + 2)]), dim=1))
        return x

    def forward_with_features(self, x: torch.Tensor):
        """One pass returning everything the SSL objectives need.

        Returns:
            ``(logits, encoder_features, decoder_features)``: ``encoder_features`` has
            ``num_stages`` entries and ``decoder_features`` ``num_stages - 1``, both highest
            resolution first; ``logits`` as in :meth:`forward`.
        """
        self._check_input(x)
        skips = self.encoder(x)
        logits, decoder_features = self.decoder(skips, return_features=True)
        return logits, skips, decoder_features


def topology_problem(ndim: int, input_channels: int, num_classes: int,
                     features_per_stage: Sequence[int], strides: Sequence[Shape],
                     kernel_sizes: Sequence[Shape], n_conv_encoder: Sequence[int],
                     n_conv_decoder: Sequence[int]) -> str | None:
    """Describe the first inconsistency in a U-Net topology, or return None if it is valid."""
    n = len(features_per_stage)
    if ndim not in (2, 3):
        return f"{ndim} spatial dimensions (only 2 and 3 are supported)"
    if n < 2:
        return f"{n} stage(s); a U-Net needs at least 2"
    if input_channels < 1 or num_classes < 1 or min(features_per_stage) < 1:
        return "channel counts must be positive"
    lengths = {"pool_op_kernel_sizes": len(strides), "conv_kernel_sizes": len(kernel_sizes),
               "n_conv_per_stage_encoder": len(n_conv_encoder)}
    for name, length in lengths.items():
        if length != n:
            return f"{name} has {length} entries, features_per_stage has {n}"
    if len(n_conv_decoder) != n - 1:
        return f"n_conv_per_stage_decoder has {len(n_conv_decoder)} entries, expected {n - 1}"
    if min(*n_conv_encoder, *n_conv_decoder) < 1:
        return "every stage needs at least one conv"
    for i, (s, k) in enumerate(zip(strides, kernel_sizes)):
        if len(s) != ndim or len(k) != ndim:
            return f"stage {i}: stride {tuple(s)} / kernel {tuple(k)} need {ndim} entries"
        if min(s) < 1 or any(kk < 1 or kk % 2 == 0 for kk in k):
            return f"stage {i}: strides must be >= 1 and kernels odd, got {tuple(s)} / {tuple(k)}"
    return None
