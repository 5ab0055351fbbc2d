"""Named registry of segmentation networks, and building one from a configuration plan.

A :class:`~sslunet.plans.ConfigurationPlan` stores the registry key of its network
(``plan.network``, default ``"plain_unet"``); :func:`build_network` turns that key back into a
module. Each network registers itself with :func:`register_network` when its module is
imported; ``sslunet/networks/__init__.py`` imports every network module of the package.

A registered network is an ``nn.Module`` subclass with a classmethod
``from_plan(plan, num_input_channels, num_classes, deep_supervision, seed) -> nn.Module`` and
the **network contract** that pretraining objectives, weight transfer and per-part learning
rates rely on (they never spell a network's attribute paths; ``EncoderDecoderUNet`` in
``base.py`` implements it for the U-Nets here):

- ``forward(x)`` -> logits (a list, highest resolution first, with deep supervision);
  ``set_deep_supervision(bool)``; ``forward_with_features(x)`` -> (logits, encoder features,
  decoder features); ``encode(x)`` -> encoder features; ``decode_to(skips, level)`` -> the
  decoder's features at ``level`` (0 = full resolution); ``num_decoder_levels``;
- module names relative to the network: ``encoder_part``; ``decoder_parts(levels=None)`` (the
  decoder blocks producing those levels, heads excluded); ``head_part(level)``;
  ``encoder_stages()`` (modules, highest resolution first); ``task_specific_prefixes``
  (never transferred: the segmentation heads); ``input_conv_key`` (the conv whose weight
  follows the number of input channels).
"""

from __future__ import annotations

from typing import Callable, TypeVar

from torch import nn

from sslunet.errors import InputError
from sslunet.plans import ConfigurationPlan
from sslunet.utils.registry import ModuleRegistry


def _has_from_plan(name: str, cls: type) -> None:
    if not callable(getattr(cls, "from_plan", None)):
        raise TypeError(f"network '{name}': {cls.__name__} has no from_plan classmethod")


_REGISTRY = ModuleRegistry("network", "networks", check=_has_from_plan)
NETWORKS: dict[str, type[nn.Module]] = _REGISTRY.entries
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
