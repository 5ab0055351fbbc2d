"""Tests for sslunet.training.config: the recipe values are validated."""

from __future__ import annotations

import dataclasses

import pytest

from sslunet.errors import SettingError
from sslunet.ssl.api import PretrainOptions
from sslunet.study.api import StudyOptions
from sslunet.training.api import FinetuneOptions
from sslunet.training.config import TrainingConfig, TrainingOverrides, options_record


def test_recipe_values_are_validated():
    with pytest.raises(ValueError, match="freeze_encoder_epochs"):
        TrainingConfig(epochs=2, freeze_encoder_epochs=3)
    with pytest.raises(ValueError, match="pretrained_lr_scale"):
        TrainingConfig(pretrained_lr_scale=0.0)


# --------------------------------------------------------------------------- typed overrides
def test_overrides_are_every_training_field_optional():
    names = [f.name for f in dataclasses.fields(TrainingConfig)]
    assert [f.name for f in dataclasses.fields(TrainingOverrides)] == names
    assert TrainingOverrides().set_fields() == {}
    cfg = TrainingOverrides(lr=3e-3, epochs=20).apply(TrainingConfig())
    assert (cfg.lr, cfg.epochs, cfg.optimizer) == (3e-3, 20, "sgd")  # the rest untouched


def test_bad_overrides_fail_when_the_options_are_built_not_inside_a_run():
    with pytest.raises(SettingError, match="unknown training setting.*lrr"):
        FinetuneOptions("Dataset001_X", overrides={"lrr": 1e-3})
    with pytest.raises(SettingError, match="lr"):
        PretrainOptions("Dataset001_X", "mae", overrides={"lr": -1.0})
    with pytest.raises(SettingError, match="warmup_epochs"):
        StudyOptions("Dataset001_X", finetune_overrides={"epochs": 2, "warmup_epochs": 5})


def test_run_records_store_only_the_settings_given():
    record = options_record(FinetuneOptions("Dataset001_X", overrides={"epochs": 3}))
    assert record["overrides"] == {"epochs": 3} and record["dataset"] == "Dataset001_X"
