"""Tests for sslunet.preprocessing.normalization against naive numpy."""

from __future__ import annotations

import numpy as np

from sslunet.plans import ChannelIntensityStats
from sslunet.preprocessing.normalization import normalize


STATS = ChannelIntensityStats(120.0, 118.0, 25.0, 1.0, 250.0, 60.0, 200.0, "foreground")


def test_ct_and_rescale_schemes_against_naive():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 300, size=(2, 4, 5, 6)).astype(np.float32)
    mask = np.ones(x.shape[1:], bool)
    ct = normalize(x.copy(), mask, ("ct", "rescale_to_0_1"), (False, False), (STATS, STATS))
    ref = (np.clip(x[0], STATS.percentile_00_5, STATS.percentile_99_5) - STATS.mean) / STATS.std
    np.testing.assert_allclose(ct[0], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ct[1], (x[1] - x[1].min()) / (x[1].max() - x[1].min()),
                               atol=1e-6)


def test_constant_image_does_not_divide_by_zero():
    x = np.full((1, 3, 4, 4), 7.0, np.float32)
    out = normalize(x, np.ones((3, 4, 4), bool), ("zscore",), (True,), (STATS,))
    assert np.isfinite(out).all() and (out == 0).all()
