"""Tests for sslunet.ssl.objectives.registry: every objective is registered by name."""

from __future__ import annotations

import pytest

from sslunet.errors import InputError
from sslunet.ssl.objectives import get_objective, list_objectives, register_objective
from sslunet.ssl.objectives.contrastive import ContrastiveObjective


def test_registry_lists_every_objective_and_rejects_unknown_names():
    assert list_objectives() == ["contrastive", "genesis", "mae", "refs", "regression", "simclr"]
    assert get_objective("contrastive") is ContrastiveObjective
    with pytest.raises(InputError, match="known objectives: contrastive, genesis"):
        get_objective("byol")
    with pytest.raises(ValueError, match="already registered"):
        register_objective("mae")(ContrastiveObjective)
    with pytest.raises(ValueError):
        register_objective("random")
