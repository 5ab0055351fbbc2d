"""Tests for sslunet.training.config: the recipe values are validated."""

from __future__ import annotations

import pytest

from sslunet.training.config import TrainingConfig


def test_recipe_values_are_validated():
    with pytest.raises(ValueError, match="freeze_encoder_epochs"):
        TrainingConfig(epochs=2, freeze_encoder_epochs=3)
    with pytest.raises(ValueError, match="pretrained_lr_scale"):
        TrainingConfig(pretrained_lr_scale=0.0)
