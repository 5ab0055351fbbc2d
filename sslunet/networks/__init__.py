"""Segmentation networks, looked up by the registry key stored in a configuration plan.

Every module of this package except ``registry`` and ``base`` (the network contract shared by
the encoder-decoder U-Nets) defines and registers networks; they are imported here in name
order, so adding a network means adding its module (and its test).
"""

import importlib
import pkgutil

from sslunet.networks.base import EncoderDecoderUNet
from sslunet.networks.registry import (
    NETWORKS, build_network, get_network, list_networks, register_network,
)
from sslunet.networks.unet import PlainConvUNet, UNetDecoder, UNetEncoder

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if not _module.startswith("_") and _module not in ("base", "registry"):
        importlib.import_module(f"{__name__}.{_module}")

__all__ = [
    "NETWORKS",
    "EncoderDecoderUNet",
    "PlainConvUNet",
    "UNetDecoder",
    "UNetEncoder",
    "build_network",
    "get_network",
    "list_networks",
    "register_network",
]
