"""Tests for sslunet.ssl.regions: where the local stage's regions sit and how they are cut."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sslunet.ssl.regions import extract_regions, region_corners


def test_region_corners_and_extraction():
    corners = region_corners((48, 48), 3, "chaitanya")
    assert len(corners) == 13
    assert {tuple(c) for c in corners} >= {(0, 0), (22, 45), (45, 45), (11, 33), (33, 11)}
    assert len(region_corners((10, 12, 14), (2, 3, 3), "chaitanya")) == 35
    np.testing.assert_array_equal(region_corners((9, 7), 3, 2), [[0, 0], [0, 4], [6, 0], [6, 4]])
    f = torch.randn(2, 3, 9, 7)
    regions = extract_regions(f, 3, 2)
    assert regions.shape == (2, 4, 27)
    torch.testing.assert_close(regions[1, 2], f[1, :, 6:9, 0:3].reshape(-1))  # (27,)
    f3 = torch.randn(1, 2, 6, 6, 6)
    assert extract_regions(f3, (1, 2, 2), np.array([[0, 0, 0], [5, 4, 4]])).shape == (1, 2, 8)
    with pytest.raises(ValueError):
        region_corners((4, 4), 5)
