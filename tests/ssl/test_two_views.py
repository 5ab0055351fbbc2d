"""Tests for sslunet.ssl.two_views: the two augmented views of contrastive pretraining.

The cases are the fixture ``cases`` (:mod:`tests.helpers.patches`).
"""

from __future__ import annotations

import numpy as np
import torch
from batchgenerators.transforms.abstract_transforms import Compose
from batchgenerators.transforms.color_transforms import BrightnessMultiplicativeTransform

from sslunet.data import (
    make_loader,
)
from sslunet.ssl.two_views import (
    contrastive_view_transforms,
    intensity_only_two_views,
    make_two_views,
    resize_crop_axis,
    unmirror,
)
from tests.helpers.patches import patch_loader


def _blob_batch(rng, shape=(16, 32, 32)):
    """Zero background, bright box, faint texture: (2, 1, *shape)."""
    data = np.zeros((2, 1, *shape), np.float32)
    data[:, :, 4:12, 8:20, 10:26] = 5.0
    data += 0.1 * rng.random(data.shape, dtype=np.float32)
    return {"data": data, "keys": ["p", "q"]}


def test_resize_crop_axis_known_answer():
    ramp = np.arange(16, dtype=np.float32)[None]  # (1, 16)
    np.testing.assert_allclose(resize_crop_axis(ramp, 1, 0, 16, 16), ramp)
    out = resize_crop_axis(ramp, 1, 4, 8, 16)  # half-pixel aligned, clamped at the crop ends
    expected = np.clip(4 + (np.arange(16) + 0.5) * 0.5 - 0.5, 4, 11)
    np.testing.assert_allclose(out[0], expected, atol=1e-6)


def test_two_views_differ_but_keep_shape_and_are_seeded():
    batch = _blob_batch(np.random.default_rng(0))
    views = make_two_views(batch, np.random.default_rng(1))
    assert set(views) == {"data_view1", "data_view2", "keys"} and views["keys"] == ["p", "q"]
    assert views["data_view1"].shape == views["data_view2"].shape == batch["data"].shape
    assert not np.allclose(views["data_view1"], views["data_view2"])
    again = make_two_views(batch, np.random.default_rng(1))
    np.testing.assert_array_equal(views["data_view1"], again["data_view1"])
    # crops move the box: its mask is not the original one in at least one view
    mask = batch["data"] > 2.5
    assert any(not np.array_equal(_midpoint_mask(views[k]), mask) for k in ("data_view1", "data_view2"))


def _midpoint_mask(view):
    lo = view.min(axis=tuple(range(1, view.ndim)), keepdims=True)
    hi = view.max(axis=tuple(range(1, view.ndim)), keepdims=True)
    return view > (lo + hi) / 2


def test_intensity_only_views_keep_geometry():
    batch = _blob_batch(np.random.default_rng(0))
    mask = batch["data"] > 2.5
    # monotone intensity change only: the box mask and the argmax voxel are exactly preserved
    bright = Compose([BrightnessMultiplicativeTransform((0.5, 1.5), p_per_sample=1.0)])
    views = intensity_only_two_views(batch, np.random.default_rng(2), intensity=bright)
    assert not np.allclose(views["data_view1"], views["data_view2"])
    for key in ("data_view1", "data_view2"):
        assert np.array_equal(views[key] > views[key].max() / 2, mask)
        for s in range(2):
            assert np.argmax(views[key][s]) == np.argmax(batch["data"][s])
    # the default view augmentation (noise, blur, gamma...) still keeps the box in place
    views = intensity_only_two_views(batch, np.random.default_rng(3))
    for key in ("data_view1", "data_view2"):
        assert np.mean(_midpoint_mask(views[key]) == mask) > 0.97


def test_contrastive_transform_in_loader(cases):
    loader = patch_loader(cases, case_ids=["u"], patch=(32, 32), need_seg=False, seed=0)
    with make_loader(loader, contrastive_view_transforms(), num_workers=0, seed=0) as stream:
        batch = next(stream)
    assert batch["data_view1"].shape == batch["data_view2"].shape == (4, 2, 32, 32)
    assert isinstance(batch["data_view1"], torch.Tensor)
    assert not torch.equal(batch["data_view1"], batch["data_view2"])


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
