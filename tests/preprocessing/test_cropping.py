"""Tests for sslunet.preprocessing.cropping against a naive bounding box."""

from __future__ import annotations

import numpy as np

from sslunet.preprocessing.cropping import nonzero_bbox
from tests.helpers.oracles import naive_bbox


def test_nonzero_bbox_matches_naive(synthetic_case):
    rng = np.random.default_rng(1)
    for seed in range(5):
        data, _ = synthetic_case((7, 12, 15), 2, (0, 1), seed=seed, border=seed % 3)
        data[:, rng.integers(7), rng.integers(12), rng.integers(15)] = 3.0  # a stray voxel
        assert nonzero_bbox(data) == naive_bbox(data)
    assert nonzero_bbox(np.zeros((1, 3, 4, 5))) == ((0, 3), (0, 4), (0, 5))
