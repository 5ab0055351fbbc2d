"""Tests for sslunet.ssl.objectives.contrastive (Chaitanya et al.'s global and local stages)
on the stack dataset of :mod:`tests.helpers.datasets` (fixture ``tiny``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sslunet.ssl.objectives import get_objective
from sslunet.ssl.objectives.contrastive import default_local_level
from sslunet.ssl.two_views import unmirror
from tests.helpers.pretraining import CONFIGS, first_batch, make_setup


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("config", CONFIGS)
def test_partial_decoder_matches_the_full_forward(tiny, config):
    paths, plans = tiny
    obj = get_objective("contrastive").create(make_setup(paths, plans, config))
    net = obj.network
    x = torch.randn(2, 1, *plans.configurations[config].patch_size)
    _, skips, dec = net.forward_with_features(x)
    for level in range(len(dec)):
        assert torch.allclose(net.decode_to(skips, level), dec[level], atol=1e-6)
    assert obj.level == 1 and obj.decoder_levels == (1,)  # 1/4 in-plane: one block of two
    assert obj.hyperparameters()["trained_decoder_blocks"] == [0]


def test_default_local_level_is_a_quarter_of_the_in_plane_resolution():
    six_2d = [(1, 1)] + [(2, 2)] * 5  # Chaitanya et al.'s 6-level 2D U-Net
    assert default_local_level(six_2d) == 2  # 3 of 5 decoder blocks trained
    aniso = [(1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2)]
    assert default_local_level(aniso) == 2
    assert default_local_level([(1, 1), (2, 2)]) == 0  # too shallow: the deepest level


def test_global_batches_are_volumes_times_partitions_with_views(tiny):
    paths, plans = tiny
    obj = get_objective("contrastive").create(make_setup(paths, plans, "2d"))
    batch = first_batch(obj, batch_size=8)  # 8 // 4 partitions = 2 volumes
    assert batch["data_view1"].shape == batch["data_view2"].shape == (8, 1, 24, 24)
    assert batch["partition_ids"].tolist() == [0, 1, 2, 3] * 2
    vols = batch["volume_ids"].tolist()
    assert vols[:4] == [vols[0]] * 4 and vols[4:] == [vols[4]] * 4 and vols[0] != vols[4]
    assert not torch.equal(batch["data_view1"], batch["data_view2"])
    loss_gd = obj(batch)["loss"]
    minus = get_objective("contrastive").create(make_setup(paths, plans, "2d"),
                                                {"strategy": "GD-"})
    assert not torch.isclose(loss_gd, minus(batch)["loss"])


def test_local_views_share_geometry(tiny):
    paths, plans = tiny
    obj = get_objective("contrastive").create(make_setup(paths, plans, "2d"))
    obj.set_stage("local")
    batch = first_batch(obj)
    v1, v2 = batch["data_view1"], batch["data_view2"]
    assert "view2_flips" in batch  # default: view 2 mirrored, the flips recorded
    v2 = unmirror(v2, batch["view2_flips"], 2)
    # once mapped back: same anatomy, so the views stay strongly correlated voxel-wise
    for a, b in zip(v1, v2):
        assert np.corrcoef(a.flatten(), b.flatten())[0, 1] > 0.8
    paper = get_objective("contrastive").create(make_setup(paths, plans, "2d"),
                                                {"local_views": "intensity"})
    paper.set_stage("local")
    assert "view2_flips" not in first_batch(paper)
    assert obj.transferable_prefixes() == ("encoder.", "decoder.transpconvs.0.",
                                           "decoder.stages.0.")
