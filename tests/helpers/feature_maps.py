"""A test oracle for the planner's memory proxy (``sslunet.planning.topology``): nnU-Net's conv
feature-map count, measured on the real modules (forward hooks on the ``meta`` device) instead
of derived from the plan as the planner does."""

from __future__ import annotations

import torch
from torch import nn

from sslunet.networks import build_network
from sslunet.plans import ConfigurationPlan

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
              nn.ConvTranspose3d)


def conv_feature_map_size(plan: ConfigurationPlan, num_input_channels: int, num_classes: int,
                          deep_supervision: bool = False) -> int:
    """nnU-Net's VRAM proxy, counted on the real modules: sum of conv output sizes.

    The network is built on PyTorch's ``meta`` device (no memory, no arithmetic) and run once on
    a ``(1, num_input_channels, *plan.patch_size)`` input with forward hooks on every
    convolution and transposed convolution. Each call adds ``out_channels * prod(spatial)`` of
    its output. That covers every encoder conv (the strided first conv of a stage at its
    downsampled size), every decoder transposed conv and conv, and the segmentation layers that
    the forward pass actually runs: all of them with ``deep_supervision=True``, only the
    full-resolution one without; for the residual-encoder U-Net also the stem and the skips'
    1x1 projections. Normalisation, pooling and nonlinearity outputs are not counted, nor is
    the input. This is what nnU-Net's ``compute_conv_feature_map_size`` counts (except that
    its residual block also counts a skip that only pools); its planner builds the network
    without deep supervision, hence the default here.

    Args:
        plan: the configuration whose ``patch_size`` and topology are measured.
        num_input_channels: image channels.
        num_classes: output channels of the segmentation layers.
        deep_supervision: also count the lower-resolution segmentation layers.

    Returns:
        The count (a number of activations for batch size 1, not bytes).
    """
    with torch.device("meta"):
        net = build_network(plan, num_input_channels, num_classes, deep_supervision)
    # eval mode: instance norm refuses 1-voxel feature maps only when training, and a
    # planner may legitimately probe such small bottlenecks.
    net.eval()
    total = 0

    def count(_module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += output[0].numel()  # one sample: channels x spatial voxels

    handles = [m.register_forward_hook(count) for m in net.modules()
               if isinstance(m, CONV_TYPES)]
    try:
        with torch.no_grad():
            net(torch.empty((1, num_input_channels, *plan.patch_size), device="meta"))
    finally:
        for h in handles:
            h.remove()
    return int(total)
