"""Tests for sslunet.networks.registry: networks are registered and looked up by name."""

from __future__ import annotations

import pytest

from sslunet.errors import InputError
from sslunet.networks import (
    PlainConvUNet,
    build_network,
    get_network,
    list_networks,
    register_network,
)
from tests.helpers.networks import make_plan


def test_registry_has_plain_unet_and_rejects_unknown_names():
    assert "plain_unet" in list_networks()
    assert get_network("plain_unet") is PlainConvUNet
    with pytest.raises(InputError, match="plain_unet"):
        get_network("no_such_net")
    with pytest.raises(InputError, match=r"unknown network 'no_such_net'.*plain_unet"):
        build_network(make_plan(2, network="no_such_net"), 1, 2)


def test_register_rejects_duplicates_and_non_networks():
    with pytest.raises(ValueError, match="already registered"):
        register_network("plain_unet")(type("Other", (PlainConvUNet,), {}))
    with pytest.raises(TypeError):
        register_network("not_a_module")(object)
    assert "not_a_module" not in list_networks()
