"""Tests for sslunet.ssl.objectives.genesis (Models Genesis),
on the stack dataset of :mod:`tests.helpers.datasets` (fixture ``tiny``)."""

from __future__ import annotations

import pytest
import torch

from sslunet.ssl.objectives import get_objective
from tests.helpers.pretraining import first_batch, make_setup


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_genesis_target_is_the_clean_patch(tiny):
    paths, plans = tiny
    setup = make_setup(paths, plans, "3d_fullres")
    off = {"p_nonlinear": 0.0, "p_local_shuffle": 0.0, "p_paint": 0.0}
    batch = first_batch(get_objective("genesis").create(setup, off))
    assert torch.equal(batch["data"], batch["target"])
    batch = first_batch(get_objective("genesis").create(setup))
    assert batch["data"].shape == batch["target"].shape == (4, 1, 4, 24, 24)
    assert not torch.equal(batch["data"], batch["target"])
