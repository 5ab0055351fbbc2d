"""nnU-Net's residual-encoder U-Net, the network of the ResEnc presets (2D or 3D).

``sslunet_plan --preset resenc_m|resenc_l`` plans it (``plan.network == "resenc_unet"``); the
architecture is that of ``ResidualEncoderUNet`` in nnU-Net v2 (Isensee et al., "nnU-Net
Revisited: A Call for Rigorous Validation in 3D Medical Image Segmentation", MICCAI 2024;
``dynamic_network_architectures``), written here from its published rules:

* **stem**: one conv -> InstanceNorm -> LeakyReLU from the input channels to the first stage's
  features, with stage 0's kernel and stride 1 (it is the network's input conv);
* **encoder stage** ``i``: ``n_conv_per_stage_encoder[i]`` residual blocks (in a plan of this
  network the field counts *blocks*, nnU-Net's ``n_blocks_per_stage``; the presets plan
  ``1, 3, 4, 6, 6, ...``); only the first block of a stage strides (``pool_op_kernel_sizes[i]``)
  and changes the channel count;
* **residual block** (nnU-Net's ``BasicBlockD``, the ResNet-D variant of He et al., "Bag of
  Tricks for Image Classification with CNNs", CVPR 2019)::

      out = LeakyReLU( norm(conv_k(LeakyReLU(norm(conv_k,stride s(x))))) + skip(x) )

  with ``skip`` the identity when the block neither strides nor changes channels; otherwise
  average pooling with kernel = stride = ``s`` (only when ``s > 1`` on some axis), then a
  1x1(x1) conv without bias + norm (only when the channels change);
* **decoder**: the plain U-Net's :class:`~sslunet.networks.unet.UNetDecoder` (transposed conv,
  concatenation with the skip, ``n_conv_per_stage_decoder`` convs (1 in the presets), 1x1
  segmentation heads), reused as is;
* **initialisation**: He normal as the plain U-Net (:func:`~sslunet.networks.unet.
  init_weights_he`), then the last norm of every residual branch (``conv2.norm``) gets weight
  and bias 0, so each block starts as its skip path (Goyal et al., "Accurate, Large Minibatch
  SGD", 2017; nnU-Net's ``init_last_bn_before_add_to_0``).

Details the notes leave open, and what was chosen (each as in nnU-Net's public code):
  the skip of a block that strides without changing channels (deep 3D stages capped at 320
  features) is pooling only, no 1x1 conv; the skip's 1x1 conv has no bias while every other
  conv has one (nnU-Net's ResEnc plans set ``conv_bias: True``; the skip conv is hard-wired
  without); pooling uses no padding and floors (never reached: patches are divisible by the
  strides); only the residual branch's last norm is zero-initialised, not the skip's.

Parameter names (stable across pretraining and fine-tuning): ``encoder.stem.conv`` (the only
tensor whose shape follows the input channels), ``encoder.stages.<i>.<j>.conv1|conv2`` and
``encoder.stages.<i>.<j>.skip.proj`` (blocks that change channels); the decoder's are the plain
U-Net's (``decoder.transpconvs.<s>``, ``decoder.stages.<s>.<j>``, ``decoder.seg_layers.<s>``).
Ordering conventions as in :mod:`sslunet.networks.unet`.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from sslunet.networks.base import EncoderDecoderUNet, Shape
from sslunet.networks.registry import register_network
from sslunet.networks.unet import ConvBlock, UNetDecoder, init_weights_he, stage_outputs

_AVG_POOL = {2: nn.AvgPool2d, 3: nn.AvgPool3d}


class ResidualBlock(nn.Module):
    """nnU-Net's ``BasicBlockD``: two convs on the residual branch, a ResNet-D skip.

    Input ``(B, C_in, *S)``; output ``(B, C_out, *S // stride)``.

    Modules: ``conv1`` (conv with ``stride`` -> norm -> LeakyReLU), ``conv2`` (conv -> norm), the
    ``skip`` (``nn.Identity``, or a ``nn.Sequential`` of ``pool`` (average pooling by the
    stride, if it strides) and ``proj`` (1x1 conv without bias -> norm, if the channels
    change)) and the LeakyReLU ``nonlin`` applied after the sum.
    """

    def __init__(self, ndim: int, in_channels: int, out_channels: int, kernel_size: Shape,
                 stride: Shape):
        super().__init__()
        self.conv1 = ConvBlock(ndim, in_channels, out_channels, kernel_size, stride)
        self.conv2 = ConvBlock(ndim, out_channels, out_channels, kernel_size, (1,) * ndim,
                               nonlin=False)
        skip = OrderedDict()
        if any(s != 1 for s in stride):
            skip["pool"] = _AVG_POOL[ndim](tuple(stride), tuple(stride))
        if in_channels != out_channels:
            skip["proj"] = ConvBlock(ndim, in_channels, out_channels, (1,) * ndim, (1,) * ndim,
                                     bias=False, nonlin=False)
        self.skip = nn.Sequential(skip) if skip else nn.Identity()
        self.nonlin = nn.LeakyReLU(self.conv1.nonlin.negative_slope, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # branch and skip: (B, C_in, *S) -> (B, C_out, *S // stride) each; summed, then LeakyReLU
        return self.nonlin(self.conv2(self.conv1(x)) + self.skip(x))


class ResidualEncoder(nn.Module):
    """Stem conv, then stages of residual blocks; returns every stage's output.

    Args:
        ndim: 2 or 3.
        input_channels: image channels.
        features_per_stage: output channels of each stage (the stem outputs stage 0's).
        strides: stride of each stage's first block (stage 0: all ones).
        kernel_sizes: conv kernel of each stage (the stem uses stage 0's).
        n_blocks: residual blocks per stage.
    """

    def __init__(self, ndim: int, input_channels: int, features_per_stage: Sequence[int],
                 strides: Sequence[Shape], kernel_sizes: Sequence[Shape],
                 n_blocks: Sequence[int]):
        super().__init__()
        self.output_channels = tuple(features_per_stage)
        self.strides = tuple(tuple(s) for s in strides)
        self.kernel_sizes = tuple(tuple(k) for k in kernel_sizes)
        ones = (1,) * ndim
        self.stem = ConvBlock(ndim, input_channels, features_per_stage[0], self.kernel_sizes[0],
                              ones)
        in_channels = [features_per_stage[0], *features_per_stage[:-1]]
        self.stages = nn.ModuleList([
            nn.Sequential(*[
                ResidualBlock(ndim, c_in if j == 0 else c_out, c_out, k, s if j == 0 else ones)
                for j in range(n)])
            for n, c_in, c_out, k, s in zip(n_blocks, in_channels, features_per_stage,
                                            self.kernel_sizes, self.strides)
        ])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Args: x ``(B, C_in, *patch)``.

        Returns:
            One tensor per stage, highest resolution first: stage ``i`` is
            ``(B, features_per_stage[i], *(patch // cumulative_stride[i]))``; the last entry is
            the bottleneck.
        """
        return stage_outputs(self.stages, self.stem(x))  # stem: (B, features_per_stage[0], *patch)


@register_network("resenc_unet")
class ResidualEncoderUNet(EncoderDecoderUNet):
    """nnU-Net's residual-encoder U-Net (see the module docstring); arguments and the network
    contract as :class:`~sslunet.networks.base.EncoderDecoderUNet`, where ``n_conv_encoder``
    counts residual blocks per stage; plus ``deep_supervision`` (initial setting) and ``seed``
    (of the weight initialisation, through a private generator; the global RNG is untouched).
    """

    input_conv_key = "encoder.stem.conv"

    def __init__(self, ndim: int, input_channels: int, num_classes: int,
                 features_per_stage: Sequence[int], strides: Sequence[Shape],
                 kernel_sizes: Sequence[Shape], n_conv_encoder: Sequence[int],
                 n_conv_decoder: Sequence[int], deep_supervision: bool = True, seed: int = 0):
        super().__init__(ndim, input_channels, num_classes, features_per_stage, strides,
                         kernel_sizes, n_conv_encoder, n_conv_decoder)
        self._assemble(
            lambda: ResidualEncoder(ndim, input_channels, features_per_stage, strides,
                                    kernel_sizes, n_conv_encoder),
            lambda: UNetDecoder(ndim, features_per_stage, strides, kernel_sizes, n_conv_decoder,
                                num_classes, deep_supervision),
            lambda net: _initialise(net, seed))


def _initialise(net: nn.Module, seed: int) -> None:
    init_weights_he(net, torch.Generator(device="cpu").manual_seed(seed))
    zero_last_branch_norms(net)


def zero_last_branch_norms(module: nn.Module) -> None:
    """Weight and bias 0 for the last norm of every residual branch: each block then starts as
    its skip path (nnU-Net's ``init_last_bn_before_add_to_0``)."""
    for m in module.modules():
        if isinstance(m, ResidualBlock):
            with torch.no_grad():
                m.conv2.norm.weight.zero_()
                m.conv2.norm.bias.zero_()
