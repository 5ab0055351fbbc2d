"""Tests for sslunet.ssl.objectives.refs (reference-guided gradient matching),
on the stack dataset of :mod:`tests.helpers.datasets` (fixture ``tiny``)."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch

from sslunet.errors import InputError
from sslunet.ssl.objectives import get_objective
from tests.helpers.pretraining import first_batch, make_setup


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_refs_gradient_matching_term_reaches_the_matched_parameters(tiny):
    paths, plans = tiny
    setup = make_setup(paths, plans, "2d")
    batch = first_batch(get_objective("refs").create(setup))
    grads = {}
    for lam in (0.0, 1.0):
        obj = get_objective("refs").create(setup, {"lambda_gm": lam, "match_stages": 1})
        out = obj(batch)
        out["loss"].backward()
        grads[lam] = [p.grad.clone() for p in obj.matched_parameters()]
        if lam:
            assert 0.0 <= float(out["gm_loss"]) <= 2.0
            assert torch.isclose(out["loss"], out["ssl_loss"] + out["ref_loss"] + out["gm_loss"])
    assert any(not torch.allclose(a, b) for a, b in zip(grads[0.0], grads[1.0]))
    assert len(obj.matched_parameters()) == len(list(obj.network.encoder.stages[-1].parameters()))
    obj.eval()
    with torch.no_grad():
        assert "gm_loss" not in obj(batch)  # validation: no gradients to match


def test_refs_is_refused_under_torchrun_and_with_other_plans(tiny, tmp_path):
    paths, plans = tiny
    setup = make_setup(paths, plans, "2d")
    with pytest.raises(InputError, match="torchrun"):
        get_objective("refs").create(dataclasses.replace(setup, distributed=True))
    # a second dataset with the same plans is a valid reference ...
    same = paths.preprocessed / "Dataset902_Same"
    shutil.copytree(paths.preprocessed / plans.dataset_name, same)
    obj = get_objective("refs").create(setup, {"reference": "902"})
    assert obj.reference.dataset == "Dataset902_Same" and len(obj.reference.case_ids) == 4
    assert obj.hyperparameters()["reference_dataset"] == "Dataset902_Same"
    # ... one planned with another architecture is not
    other = plans.replace(configurations={**plans.configurations, "2d": dataclasses.replace(
        plans.configurations["2d"], features_per_stage=(8, 16, 32))})
    (paths.preprocessed / "Dataset903_Other").mkdir()
    other.save(paths.preprocessed / "Dataset903_Other" / "plans.json")
    with pytest.raises(InputError, match="another architecture.*features_per_stage"):
        get_objective("refs").create(setup, {"reference": "Dataset903_Other"})
    with pytest.raises(InputError, match="no dataset matches"):
        get_objective("refs").create(setup, {"reference": "Nope"})
