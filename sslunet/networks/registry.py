"""Named registry of segmentation networks, and building one from a configuration plan.

A :class:`~sslunet.plans.ConfigurationPlan` stores the registry key of its network
(``plan.network``, default ``"plain_unet"``); :func:`build_network` turns that key back into a
module. Networks register explicitly (``sslunet/networks/__init__.py`` imports their modules),
never by crawling the file system.

A registered network is an ``nn.Module`` subclass with a classmethod
``from_plan(plan, num_input_channels, num_classes, deep_supervision, seed) -> nn.Module``.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch
from torch import nn

from sslunet.errors import InputError
from sslunet.plans import ConfigurationPlan
from sslunet.utils.registry import ModuleRegistry


def _has_from_plan(name: str, cls: type) -> None:
    if not callable(getattr(cls, "from_plan", None)):
        raise TypeError(f"network '{name}': {cls.__name__} has no from_plan classmethod")


_REGISTRY = ModuleRegistry("network", "networks", check=_has_from_plan)
NETWORKS: dict[str, type[nn.Module]] = _REGISTRY.entries
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
               nn.ConvTranspose3d)

T = TypeVar("T", bound=type)


def register_network(name: str) -> Callable[[T], T]:
    """Class decorator: make a network buildable from plans under ``name``.

    Raises:
        ValueError: ``name`` is already taken by another class.
        TypeError: the class is not an ``nn.Module`` or has no ``from_plan`` classmethod.
    """
    return _REGISTRY.register(name)


def list_networks() -> list[str]:
    """Registered network names, sorted."""
    return _REGISTRY.names()


def get_network(name: str) -> type[nn.Module]:
    """The network class registered under ``name`` (InputError listing the known ones)."""
    return _REGISTRY.get(name)


def build_network(plan: ConfigurationPlan, num_input_channels: int, num_classes: int,
                  deep_supervision: bool = True, seed: int = 0) -> nn.Module:
    """Build the network named by ``plan.network`` for this configuration.

    Args:
        plan: the configuration (topology, kernels, features, patch size).
        num_input_channels: image channels (modalities) fed to the network.
        num_classes: output channels: labels incl. background for segmentation, or
            ``num_input_channels`` for a restoration (reconstruction) pretext task.
        deep_supervision: return one output per decoder stage (training) or only the
            full-resolution one (inference). Switchable later with ``set_deep_supervision``.
        seed: seeds the weight initialisation (a private ``torch.Generator``; the global RNG
            is neither read nor advanced).

    Returns:
        The initialised network (on the CPU, in training mode).

    Raises:
        InputError: unknown ``plan.network`` or an inconsistent plan.
    """
    if plan.network not in NETWORKS:
        raise InputError(f"configuration '{plan.name}' asks for unknown network "
                         f"'{plan.network}'; known networks: {', '.join(list_networks())}")
    return NETWORKS[plan.network].from_plan(plan, num_input_channels, num_classes,
                                            deep_supervision=deep_supervision, seed=seed)


def conv_feature_map_size(plan: ConfigurationPlan, num_input_channels: int, num_classes: int,
                          deep_supervision: bool = False) -> int:
    """nnU-Net's VRAM proxy, counted on the real modules: sum of conv output sizes.

    The network is built on PyTorch's ``meta`` device (no memory, no arithmetic) and run once on
    a ``(1, num_input_channels, *plan.patch_size)`` input with forward hooks on every
    convolution and transposed convolution. Each call adds ``out_channels * prod(spatial)`` of
    its output. That covers every encoder conv (the strided first conv of a stage at its
    downsampled size), every decoder transposed conv and conv, and the segmentation layers that
    the forward pass actually runs: all of them with ``deep_supervision=True``, only the
    full-resolution one without. Normalisation and nonlinearity outputs are not counted, nor is
    the input. This is what nnU-Net's ``compute_conv_feature_map_size`` counts; its planner
    builds the network without deep supervision, hence the default here.

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
               if isinstance(m, _CONV_TYPES)]
    try:
        with torch.no_grad():
            net(torch.empty((1, num_input_channels, *plan.patch_size), device="meta"))
    finally:
        for h in handles:
            h.remove()
    return int(total)
