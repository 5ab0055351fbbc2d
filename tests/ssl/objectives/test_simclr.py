"""Tests for sslunet.ssl.objectives.simclr's options base, shared by the contrastive objectives."""

from __future__ import annotations

import dataclasses

import pytest

from sslunet.ssl.objectives.contrastive import ContrastiveOptions
from sslunet.ssl.objectives.refs import RefsOptions
from sslunet.ssl.objectives.simclr import SimCLROptions, TwoViewContrastiveOptions


def test_contrastive_objectives_share_one_options_base():
    shared = {"temperature": 0.1, "proj_dim": 128, "proj_hidden": 1024, "crop_min": 0.5}
    for cls in (SimCLROptions, ContrastiveOptions, RefsOptions):
        assert issubclass(cls, TwoViewContrastiveOptions)
        saved = dataclasses.asdict(cls())  # what pretrain_config.json and checkpoints hold
        assert {k: saved[k] for k in shared} == shared
    # the names saved before the shared base existed
    assert set(dataclasses.asdict(ContrastiveOptions())) == {
        "strategy", "temperature", "partitions", "local_epochs_fraction", "local_level",
        "local_variant", "local_negatives", "region_size", "proj_dim", "proj_hidden",
        "crop_min", "local_views", "local_negatives_from"}
    assert set(dataclasses.asdict(RefsOptions())) == {
        "ssl_loss", "reference", "lambda_ref", "lambda_gm", "match_stages", "temperature",
        "proj_dim", "proj_hidden", "crop_min"}
    with pytest.raises(ValueError, match="temperature must be > 0"):
        RefsOptions(temperature=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ContrastiveOptions().temperature = 1.0
