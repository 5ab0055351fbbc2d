"""Tests for sslunet.ssl.objectives.base: the objective contract, checked for every objective
on the stack dataset of :mod:`tests.helpers.datasets` (fixture ``tiny``), and its grid pooling."""

from __future__ import annotations

import pytest
import torch

from sslunet.ssl.objectives import get_objective, list_objectives
from tests.helpers.pretraining import CONFIGS, first_batch, make_setup


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("objective", list_objectives())
def test_one_step_trains_exactly_the_declared_modules(tiny, objective, config):
    paths, plans = tiny
    obj = get_objective(objective).create(make_setup(paths, plans, config))
    for stage in obj.stages():
        obj.set_stage(stage.name)
        obj.zero_grad(set_to_none=True)
        out = obj(first_batch(obj))
        assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
        out["loss"].backward()
        trainable = tuple(m + "." for m in obj.trainable_modules())
        got_grad = set()
        for name, p in obj.named_parameters():
            assert p.requires_grad == name.startswith(trainable), name
            if not p.requires_grad:
                assert p.grad is None, name
            elif p.grad is not None and p.grad.abs().sum() > 0:
                got_grad.add(name)
        for module in obj.trainable_modules():  # every trained module learns something
            assert any(n.startswith(module + ".") for n in got_grad), module
    prefixes = obj.transferable_prefixes()
    assert "encoder." in prefixes and not any("seg_layers" in p for p in prefixes)
    trained = tuple(m + "." for m in obj.trained_modules())
    assert all(("network." + p).startswith(trained) for p in prefixes)  # only trained parts
