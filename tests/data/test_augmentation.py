"""Tests for sslunet.data.augmentation: the dummy-2D rule, the enlarged patch read before
rotation, and the training and validation transforms.

The cases are the fixture ``cases`` (:mod:`tests.helpers.patches`).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from batchgenerators.transforms.spatial_transforms import SpatialTransform

from sslunet.data import (
    make_loader,
    patch_size_before_augmentation,
    spatial_augmentation,
    training_transforms,
    use_dummy_2d,
    validation_transforms,
)
from tests.helpers.patches import patch_loader


def test_dummy_2d_selection():
    assert use_dummy_2d((8, 32, 32)) and use_dummy_2d((4, 64, 40))
    assert not use_dummy_2d((16, 32, 32)) and not use_dummy_2d((12, 36, 36))  # 3.0 is not > 3
    assert not use_dummy_2d((32, 32))
    assert spatial_augmentation((8, 32, 32)).rotation == (-math.pi, math.pi)
    assert spatial_augmentation((8, 32, 32), anisotropic=False).rotation == (-math.pi / 6, math.pi / 6)
    spatial = [t for t in training_transforms((8, 32, 32)).transforms if isinstance(t, SpatialTransform)]
    assert spatial[0].patch_size == (32, 32) and spatial[0].angle_y == (0.0, 0.0)
    spatial = [t for t in training_transforms((16, 32, 32)).transforms if isinstance(t, SpatialTransform)]
    assert spatial[0].patch_size == (16, 32, 32) and spatial[0].angle_y == (-math.pi / 6, math.pi / 6)


def _reference_enlarged(patch, planes, max_angle, scale=1.4):
    """Brute force: rotate the box corners about each plane, take the bounding box, scale."""
    patch = np.asarray(patch, float)
    corners = np.array(np.meshgrid(*[[-p / 2, p / 2] for p in patch], indexing="ij")).reshape(len(patch), -1)
    extent = patch.copy()
    for i, j in planes:
        for a in np.linspace(0, max_angle, 2001):
            rot = np.eye(len(patch))
            rot[[i, i, j, j], [i, j, i, j]] = [math.cos(a), -math.sin(a), math.sin(a), math.cos(a)]
            rotated = rot @ corners
            extent = np.maximum(extent, rotated.max(1) - rotated.min(1))
    moved = sorted({a for p in planes for a in p})
    extent[moved] *= scale
    return extent


@pytest.mark.parametrize(
    "patch, planes, angle",
    [((32, 32), [(0, 1)], math.pi), ((16, 32, 48), [(1, 2), (0, 2), (0, 1)], math.pi / 6),
     ((8, 32, 40), [(1, 2)], math.pi)],
)
def test_patch_size_before_augmentation(patch, planes, angle):
    ref = _reference_enlarged(patch, planes, angle)
    got = np.asarray(patch_size_before_augmentation(patch))
    assert np.all(got >= ref - 1e-6) and np.all(got <= np.ceil(ref) + 1)
    if len(patch) == 3 and planes == [(1, 2)]:
        assert got[0] == patch[0]  # dummy-2D: no enlargement along Z


@pytest.mark.parametrize("patch", [(16, 32, 32), (8, 32, 32), (32, 32)])
def test_training_transforms_output(cases, patch):
    read = patch_size_before_augmentation(patch)
    loader = patch_loader(cases, patch=patch, batch_size=6, patch_size_before_aug=read, seed=5)
    with make_loader(loader, training_transforms(patch, ndim=len(patch)), num_workers=0, seed=5) as stream:
        for _ in range(3):
            batch = next(stream)
            assert isinstance(batch["data"], torch.Tensor) and batch["data"].dtype == torch.float32
            assert batch["data"].shape == (6, 2, *patch)
            assert batch["seg"].shape == (6, 1, *patch) and batch["seg"].dtype == torch.int16
            assert set(torch.unique(batch["seg"]).tolist()) <= {0, 1, 2}
            assert torch.isfinite(batch["data"]).all()


def test_validation_transforms_only_convert(cases):
    raw = next(patch_loader(cases, case_ids=["c"], seed=0))
    out = validation_transforms()(**{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in raw.items()})
    np.testing.assert_array_equal(out["data"].numpy(), raw["data"])
    np.testing.assert_array_equal(out["seg"].numpy(), np.where(raw["seg"] < 0, 0, raw["seg"]))
    assert (raw["seg"] == -1).any()
