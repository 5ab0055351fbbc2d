"""The plain convolutional U-Net of nnU-Net, built from a configuration plan (2D or 3D).

Architecture (Ronneberger et al., "U-Net", MICCAI 2015, as configured by Isensee et al.,
"nnU-Net", Nature Methods 2021, and its v2 ``PlainConvUNet``):

* every conv is followed by instance norm (affine, eps 1e-5) and LeakyReLU(0.01); convs
  carry a bias; "same" padding (``kernel // 2``), so kernels must be odd;
* encoder stage ``i`` has ``n_conv_per_stage_encoder[i]`` convs; its first conv carries the
  stride ``pool_op_kernel_sizes[i]`` (no pooling layers), stage 0 has stride 1;
* decoder stage: transposed conv with kernel = stride (back to the skip's resolution and
  channels), concatenation ``[upsampled, skip]`` along channels, ``n_conv_per_stage_decoder``
  convs with the skip stage's kernel, and a 1x1(x1) segmentation conv for deep supervision;
* He (Kaiming) normal init with negative slope 1e-2 for (transposed) convs, zero biases
  (He et al., "Delving deep into rectifiers", ICCV 2015; nnU-Net's ``InitWeights_He``).

Parameter names are stable across pretraining and fine-tuning: ``encoder.stages.<i>.<j>.conv``,
``decoder.transpconvs.<s>``, ``decoder.stages.<s>.<j>.conv``, ``decoder.seg_layers.<s>``. Only
``decoder.seg_layers`` depends on the number of output classes, and only
``encoder.stages.0.0.conv`` on the number of input channels.

Ordering convention. Decoder *module lists* are indexed in computation order, lowest
resolution first (``decoder.stages[0]`` consumes the bottleneck), as in nnU-Net. Every *list of
tensors* returned (encoder skips, deep-supervision logits, decoder features) is highest
resolution first, so that ``skips[i]``, ``logits[i]`` and ``decoder_features[i]`` share the same
spatial size for ``i < num_stages - 1``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from sslunet.networks.base import EncoderDecoderUNet, Shape
from sslunet.networks.registry import register_network

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_TRANSPOSED_CONV = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_INSTANCE_NORM = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}

NEGATIVE_SLOPE = 1e-2
NORM_EPS = 1e-5


class ConvBlock(nn.Module):
    """conv -> InstanceNorm (affine) -> LeakyReLU, "same" padding.

    Input ``(B, C_in, *S)``; output ``(B, C_out, *S_out)`` with ``S_out = S // stride``
    (when ``S`` is divisible by ``stride``). ``bias=False`` drops the conv bias and
    ``nonlin=False`` the LeakyReLU (an identity then), for residual blocks; the plain U-Net
    uses the defaults.
    """

    def __init__(self, ndim: int, in_channels: int, out_channels: int, kernel_size: Shape,
                 stride: Shape, *, bias: bool = True, nonlin: bool = True):
        super().__init__()
        self.conv = _CONV[ndim](in_channels, out_channels, tuple(kernel_size), tuple(stride),
                                padding=tuple(k // 2 for k in kernel_size), bias=bias)
        self.norm = _INSTANCE_NORM[ndim](out_channels, eps=NORM_EPS, affine=True)
        self.nonlin = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True) if nonlin else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin(self.norm(self.conv(x)))


def conv_stage(ndim: int, n_convs: int, in_channels: int, out_channels: int,
               kernel_size: Shape, first_stride: Shape) -> nn.Sequential:
    """``n_convs`` ConvBlocks; only the first one strides and changes the channel count."""
    ones = (1,) * ndim
    return nn.Sequential(*[
        ConvBlock(ndim, in_channels if j == 0 else out_channels, out_channels, kernel_size,
                  first_stride if j == 0 else ones)
        for j in range(n_convs)
    ])


def stage_outputs(stages: nn.ModuleList, x: torch.Tensor) -> list[torch.Tensor]:
    """Run ``x`` through ``stages`` in turn and keep every stage's output (the skips)."""
    features = []
    for stage in stages:
        x = stage(x)
        features.append(x)
    return features


class UNetEncoder(nn.Module):
    """Strided-conv encoder; returns every stage's output (the skips and the bottleneck).

    Args:
        ndim: 2 or 3.
        input_channels: image channels.
        features_per_stage: output channels of each stage.
        strides: stride of each stage's first conv (stage 0: all ones).
        kernel_sizes: conv kernel of each stage.
        n_convs: convs per stage.
    """

    def __init__(self, ndim: int, input_channels: int, features_per_stage: Sequence[int],
                 strides: Sequence[Shape], kernel_sizes: Sequence[Shape],
                 n_convs: Sequence[int]):
        super().__init__()
        self.output_channels = tuple(features_per_stage)
        self.strides = tuple(tuple(s) for s in strides)
        self.kernel_sizes = tuple(tuple(k) for k in kernel_sizes)
        in_channels = [input_channels, *features_per_stage[:-1]]
        self.stages = nn.ModuleList([
            conv_stage(ndim, n, c_in, c_out, k, s)
            for n, c_in, c_out, k, s in zip(n_convs, in_channels, features_per_stage,
                                            self.kernel_sizes, self.strides)
        ])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Args: x ``(B, C_in, *patch)``.

        Returns:
            One tensor per stage, highest resolution first: stage ``i`` is
            ``(B, features_per_stage[i], *(patch // cumulative_stride[i]))``; the last entry is
            the bottleneck.
        """
        return stage_outputs(self.stages, x)


class UNetDecoder(nn.Module):
    """Transposed-conv decoder with skip concatenation and per-stage segmentation heads.

    All ``num_stages - 1`` segmentation layers are always built, so a checkpoint trained with
    deep supervision loads into a network used without it (and vice versa).

    Args:
        ndim: 2 or 3.
        encoder_channels: the encoder's ``features_per_stage``.
        encoder_strides: the encoder's per-stage strides.
        encoder_kernel_sizes: the encoder's per-stage kernels (reused for the matching decoder
            stage).
        n_convs: convs per decoder stage, ordered highest resolution first as in the plan
            (``n_conv_per_stage_decoder[i]`` belongs to the stage at encoder resolution ``i``).
        num_classes: output channels of the segmentation layers.
        deep_supervision: return logits of every decoder stage, or only the full-resolution one.
    """

    def __init__(self, ndim: int, encoder_channels: Sequence[int],
                 encoder_strides: Sequence[Shape], encoder_kernel_sizes: Sequence[Shape],
                 n_convs: Sequence[int], num_classes: int, deep_supervision: bool):
        super().__init__()
        self.deep_supervision = deep_supervision
        self.num_classes = num_classes
        transpconvs, stages, seg_layers = [], [], []
        # s = 0 upsamples the bottleneck (encoder stage n-1) to encoder stage n-2, and so on.
        for s in range(len(encoder_channels) - 1):
            below, skip = len(encoder_channels) - 1 - s, len(encoder_channels) - 2 - s
            stride = tuple(encoder_strides[below])
            transpconvs.append(_TRANSPOSED_CONV[ndim](
                encoder_channels[below], encoder_channels[skip], stride, stride, bias=True))
            stages.append(conv_stage(ndim, n_convs[skip], 2 * encoder_channels[skip],
                                     encoder_channels[skip], encoder_kernel_sizes[skip],
                                     (1,) * ndim))
            seg_layers.append(_CONV[ndim](encoder_channels[skip], num_classes, 1, bias=True))
        self.transpconvs = nn.ModuleList(transpconvs)
        self.stages = nn.ModuleList(stages)
        self.seg_layers = nn.ModuleList(seg_layers)

    def forward(self, skips: list[torch.Tensor], return_features: bool = False):
        """Args:
            skips: the encoder's outputs, highest resolution first (bottleneck last).
            return_features: also return the per-stage decoder features.

        Returns:
            ``logits``: with deep supervision, a list of ``num_stages - 1`` tensors, highest
            resolution first, ``logits[i]`` of shape ``(B, num_classes, *skips[i].shape[2:])``;
            without, the single full-resolution tensor ``logits[0]``. With
            ``return_features=True``: ``(logits, features)`` where ``features[i]`` is the output
            of the decoder stage at that resolution, ``(B, C_i, *skips[i].shape[2:])``
            (``C_i`` = encoder channels of stage ``i``), highest resolution first, always all
            ``num_stages - 1`` of them.
        """
        x = skips[-1]
        features, logits = [], []
        last = len(self.stages) - 1
        for s, (up, stage) in enumerate(zip(self.transpconvs, self.stages)):
            # (B, C_below, *S_below) -> (B, C_skip, *S_skip), then concat -> (B, 2*C_skip, *S_skip)
            x = stage(torch.cat((up(x), skips[-(s + 2)]), dim=1))
            features.append(x)
            if self.deep_supervision or s == last:
                logits.append(self.seg_layers[s](x))
        features.reverse()
        logits.reverse()
        out = logits if self.deep_supervision else logits[0]
        return (out, features) if return_features else out


@register_network("plain_unet")
class PlainConvUNet(EncoderDecoderUNet):
    """nnU-Net's plain conv U-Net (the module docstring); arguments as
    :class:`EncoderDecoderUNet`, plus ``deep_supervision`` (initial setting) and ``seed`` (of
    the weight initialisation, through a private generator)."""

    input_conv_key = "encoder.stages.0.0.conv"

    def __init__(self, ndim: int, input_channels: int, num_classes: int,
                 features_per_stage: Sequence[int], strides: Sequence[Shape],
                 kernel_sizes: Sequence[Shape], n_conv_encoder: Sequence[int],
                 n_conv_decoder: Sequence[int], deep_supervision: bool = True, seed: int = 0):
        super().__init__(ndim, input_channels, num_classes, features_per_stage, strides,
                         kernel_sizes, n_conv_encoder, n_conv_decoder)
        self._assemble(
            lambda: UNetEncoder(ndim, input_channels, features_per_stage, strides, kernel_sizes,
                                n_conv_encoder),
            lambda: UNetDecoder(ndim, features_per_stage, strides, kernel_sizes, n_conv_decoder,
                                num_classes, deep_supervision),
            lambda net: init_weights_he(net, torch.Generator(device="cpu").manual_seed(seed)))


def init_weights_he(module: nn.Module, generator: torch.Generator,
                    negative_slope: float = NEGATIVE_SLOPE) -> None:
    """He normal init of every (transposed) conv weight, zero biases; norms keep (1, 0).

    ``std = sqrt(2 / (1 + a^2) / fan_in)`` with ``fan_in = weight.shape[1] * prod(kernel)``,
    which is PyTorch's ``kaiming_normal_`` convention (for a transposed conv ``shape[1]`` is
    the output channels), written out so the draw uses ``generator``.
    """
    conv_types = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
    gain = math.sqrt(2.0 / (1.0 + negative_slope ** 2))
    for m in module.modules():
        if isinstance(m, conv_types):
            fan_in = m.weight.shape[1] * math.prod(m.weight.shape[2:])
            with torch.no_grad():
                m.weight.normal_(0.0, gain / math.sqrt(fan_in), generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
