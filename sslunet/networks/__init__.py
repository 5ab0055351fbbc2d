"""Segmentation networks, looked up by the registry key stored in a configuration plan.

Every network module is imported here explicitly so that it registers itself; nothing is
discovered by crawling the package folder.
"""

from sslunet.networks import unet  # noqa: F401  (registers "plain_unet")
from sslunet.networks.registry import (
    NETWORKS,
    build_network,
    get_network,
    list_networks,
    register_network,
)
from sslunet.networks.unet import PlainConvUNet, UNetDecoder, UNetEncoder

__all__ = [
    "NETWORKS",
    "PlainConvUNet",
    "UNetDecoder",
    "UNetEncoder",
    "build_network",
    "get_network",
    "list_networks",
    "register_network",
]
