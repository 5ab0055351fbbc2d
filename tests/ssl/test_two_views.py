"""Tests for sslunet.ssl.two_views: the two augmented views of contrastive pretraining."""

from __future__ import annotations

import numpy as np
import torch

from sslunet.ssl.two_views import make_two_views, unmirror


def test_mirrored_views_map_back_onto_view_one():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(6, 1, 8, 10)).astype(np.float32)
    identity = lambda **d: d  # noqa: E731 - no intensity change: geometry alone is compared
    out = make_two_views({"data": data}, np.random.default_rng(1), crop_fraction=None,
                         intensity=identity, mirror_view2=True)
    flips = out["view2_flips"]
    assert flips.shape == (6, 2) and 0 < flips.sum() < 12  # some images mirrored, not all
    v1, v2 = torch.from_numpy(out["data_view1"]), torch.from_numpy(out["data_view2"])
    assert not torch.equal(v1, v2)
    assert torch.equal(unmirror(v2, torch.from_numpy(flips), 2), v1)
