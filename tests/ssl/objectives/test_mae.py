"""Tests for sslunet.ssl.objectives.mae,
on the stack dataset of :mod:`tests.helpers.datasets` (fixture ``tiny``)."""

from __future__ import annotations

import pytest
import torch

from sslunet.ssl.objectives import get_objective
from tests.helpers.pretraining import first_batch, make_setup


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_mae_hides_the_asked_share_of_blocks_and_scores_only_them(tiny):
    paths, plans = tiny
    obj = get_objective("mae").create(make_setup(paths, plans, "2d"), {"mask_ratio": 0.75})
    assert obj.block_size == (3, 3)  # 24 // 8 per axis
    batch = first_batch(obj)
    mask, data, target = batch["mask"], batch["data"], batch["target"]
    assert mask.dtype == torch.bool and mask.shape == (4, 1, 24, 24)
    assert torch.all(data[mask.expand_as(data)] == 0)
    assert torch.equal(data[~mask.expand_as(data)], target[~mask.expand_as(data)])
    assert torch.allclose(mask.float().mean(dim=(1, 2, 3)), torch.full((4,), 48 / 64))
    pred = torch.randn_like(target)
    changed = torch.where(mask, pred, pred + 5.0)  # differs only where nothing is scored
    assert torch.isclose(obj.restoration_loss(pred, batch), obj.restoration_loss(changed, batch))
    assert torch.isclose(obj.restoration_loss(pred, batch),
                         ((pred - target)[mask.expand_as(pred)] ** 2).mean())
