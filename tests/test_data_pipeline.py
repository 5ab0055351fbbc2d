"""Tests of patch sampling, augmentation and the (multi-process) batch loader."""

from __future__ import annotations

import math
import multiprocessing
import os
import random

import numpy as np
import pytest
import torch
from batchgenerators.transforms.abstract_transforms import Compose
from batchgenerators.transforms.color_transforms import BrightnessMultiplicativeTransform
from batchgenerators.transforms.spatial_transforms import SpatialTransform

from sslunet.data import (
    PatchDataLoader,
    make_loader,
    patch_size_before_augmentation,
    spatial_augmentation,
    training_transforms,
    use_dummy_2d,
    validation_transforms,
)
from sslunet.ssl.two_views import (
    contrastive_view_transforms, intensity_only_two_views, make_two_views, resize_crop_axis,
)
from sslunet.data.sampling import read_padded
from sslunet.errors import InputError
from sslunet.preprocessing.storage import CaseProperties, save_case


def _write_case(folder, case_id, shape, rng, center, radius, channels=1, labeled=True):
    """Random image + ball of label 1 (and a one-voxel label 2) + a -1 corner (outside mask)."""
    data = rng.normal(size=(channels, *shape)).astype(np.float32)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    dist2 = (zz - center[0]) ** 2 + (yy - center[1]) ** 2 + (xx - center[2]) ** 2
    seg = np.zeros((1, *shape), dtype=np.int8)
    seg[0][dist2 <= radius**2] = 1
    seg[0, center[0], center[1], center[2]] = 2
    seg[0, :, :2, :2] = -1
    locations = {}
    if labeled:
        for label in (1, 2):
            locations[str(label)] = np.argwhere(seg[0] == label)[:50].tolist()
    props = CaseProperties(
        case_id=case_id,
        source="imagesTr" if labeled else "imagesUnlabeled",
        sitk_spacing=(1.0, 1.0, 1.0),
        sitk_origin=(0.0, 0.0, 0.0),
        sitk_direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        original_shape=tuple(shape),
        bbox=tuple((0, s) for s in shape),
        shape_after_crop=tuple(shape),
        spacing=(1.0, 1.0, 1.0),
        target_spacing=(1.0, 1.0, 1.0),
        shape_after_resample=tuple(shape),
        has_seg=labeled,
        class_locations=locations,
    )
    save_case(folder, data, seg if labeled else None, props)
    return data, seg


@pytest.fixture
def cases(tmp_path):
    """Three labelled cases of different size (one smaller than the patches) + one unlabeled."""
    rng = np.random.default_rng(0)
    _write_case(tmp_path, "a", (20, 64, 64), rng, (10, 40, 20), 2, channels=2)
    _write_case(tmp_path, "b", (24, 56, 60), rng, (3, 50, 55), 2, channels=2)
    _write_case(tmp_path, "c", (5, 20, 24), rng, (2, 10, 12), 3, channels=2)
    _write_case(tmp_path, "u", (12, 40, 40), rng, (6, 20, 20), 3, channels=2, labeled=False)
    return tmp_path


def _loader(folder, case_ids=("a", "b", "c"), patch=(8, 32, 32), **kw):
    kw.setdefault("batch_size", 4)
    return PatchDataLoader(folder, list(case_ids), patch, ndim=len(patch), **kw)


# ----------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("patch", [(8, 32, 32), (32, 32)])
def test_patch_shapes(cases, patch):
    batch = next(_loader(cases, patch=patch, batch_size=5, seed=1))
    assert batch["data"].shape == (5, 2, *patch) and batch["data"].dtype == np.float32
    assert batch["seg"].shape == (5, 1, *patch) and batch["seg"].dtype == np.int8
    assert len(batch["keys"]) == 5 and set(batch["keys"]) <= {"a", "b", "c"}


def test_read_padded_matches_naive_reference():
    rng = np.random.default_rng(3)
    arr = rng.normal(size=(2, 5, 7, 6))
    for _ in range(20):
        size = tuple(int(s) for s in rng.integers(1, 12, size=3))
        lbs = [int(rng.integers(-s, n)) for s, n in zip(size, arr.shape[1:])]
        pad = [(0, 0)] + [(20, 20)] * 3
        ref = np.pad(arr, pad, constant_values=-5.0)
        ref = ref[(slice(None),) + tuple(slice(lb + 20, lb + 20 + s) for lb, s in zip(lbs, size))]
        np.testing.assert_array_equal(read_padded(arr, lbs, size, -5.0, np.float64), ref)


@pytest.mark.parametrize("oversample", [0.0, 1.0])
def test_small_image_is_centred_and_padded(cases, oversample):
    """Case c is (5, 20, 24); the patch (8, 32, 32) must hold it centred, padded 0 / -1."""
    data = np.load(cases / "c.npy")
    seg = np.load(cases / "c_seg.npy")
    batch = next(_loader(cases, case_ids=["c"], oversample_foreground=oversample, seed=2))
    # pad = patch - shape = (3, 12, 8); lower corner at -(pad // 2) = (-1, -6, -4)
    inner = (slice(None), slice(None), slice(1, 6), slice(6, 26), slice(4, 28))
    np.testing.assert_array_equal(batch["data"][inner], np.broadcast_to(data, (4, *data.shape)))
    np.testing.assert_array_equal(batch["seg"][inner], np.broadcast_to(seg, (4, *seg.shape)))
    outside = np.ones((8, 32, 32), bool)
    outside[inner[2:]] = False
    assert np.all(batch["data"][:, :, outside] == 0) and np.all(batch["seg"][:, :, outside] == -1)


@pytest.mark.parametrize("patch", [(8, 16, 16), (16, 16)])
def test_oversample_one_gives_foreground_everywhere(cases, patch):
    # an enlarged read patch too: the final centre crop must still contain foreground
    read = tuple(p + 10 for p in patch)
    loader = _loader(cases, patch=patch, oversample_foreground=1.0, patch_size_before_aug=read)
    for _ in range(5):
        seg = next(loader)["seg"]
        centre = (slice(None), 0) + tuple(slice(5, 5 + p) for p in patch)
        assert all(np.any(s > 0) for s in seg[centre])


def test_oversample_third_forces_last_samples_only(cases):
    loader = _loader(cases, case_ids=["a", "b"], patch=(8, 16, 16), batch_size=6, seed=4)
    head_hits = []
    for _ in range(10):
        seg = next(loader)["seg"]
        assert all(np.any(s > 0) for s in seg[4:])  # round(6 * 0.33) = 2 forced samples
        head_hits += [bool(np.any(s > 0)) for s in seg[:4]]
    # the balls are tiny, so uniformly placed patches mostly miss them
    assert sum(head_hits) < len(head_hits) / 2


def test_patches_are_read_through_memmaps(cases, monkeypatch):
    calls = []
    real_load = np.load

    def spy(path, *args, **kwargs):
        out = real_load(path, *args, **kwargs)
        calls.append((str(path), kwargs.get("mmap_mode"), type(out)))
        return out

    monkeypatch.setattr(np, "load", spy)
    next(_loader(cases, batch_size=3))
    assert len(calls) == 6  # image + labels for each of the three samples
    assert all(mode == "r" and kind is np.memmap for _, mode, kind in calls)


def test_same_seed_same_batches_other_seed_or_worker_differs(cases):
    def batches(loader, n=3):
        return [next(loader) for _ in range(n)]

    first, again = batches(_loader(cases, seed=7)), batches(_loader(cases, seed=7))
    for x, y in zip(first, again):
        np.testing.assert_array_equal(x["data"], y["data"])
        np.testing.assert_array_equal(x["seg"], y["seg"])
        assert x["keys"] == y["keys"]
    other = batches(_loader(cases, seed=8))
    assert not all(np.array_equal(x["data"], y["data"]) for x, y in zip(first, other))
    worker = _loader(cases, seed=7)
    worker.set_thread_id(1)
    assert not np.array_equal(next(worker)["data"], first[0]["data"])
    worker.set_thread_id(0)  # restarts the thread-0 stream
    np.testing.assert_array_equal(next(worker)["data"], first[0]["data"])


def test_unlabeled_cases(cases):
    loader = _loader(cases, case_ids=["u"], need_seg=False, oversample_foreground=1.0)
    batch = next(loader)
    assert "seg" not in batch and batch["data"].shape == (4, 2, 8, 32, 32)
    with pytest.raises(InputError, match="u_seg.npy"):
        _loader(cases, case_ids=["u"], need_seg=True)
    with pytest.raises(InputError, match="missing"):
        _loader(cases, case_ids=["nope"])


# ----------------------------------------------------------------------------- augmentation


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
    loader = _loader(cases, patch=patch, batch_size=6, patch_size_before_aug=read, seed=5)
    with make_loader(loader, training_transforms(patch, ndim=len(patch)), num_workers=0, seed=5) as stream:
        for _ in range(3):
            batch = next(stream)
            assert isinstance(batch["data"], torch.Tensor) and batch["data"].dtype == torch.float32
            assert batch["data"].shape == (6, 2, *patch)
            assert batch["seg"].shape == (6, 1, *patch) and batch["seg"].dtype == torch.int16
            assert set(torch.unique(batch["seg"]).tolist()) <= {0, 1, 2}
            assert torch.isfinite(batch["data"]).all()


def test_validation_transforms_only_convert(cases):
    raw = next(_loader(cases, case_ids=["c"], seed=0))
    out = validation_transforms()(**{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in raw.items()})
    np.testing.assert_array_equal(out["data"].numpy(), raw["data"])
    np.testing.assert_array_equal(out["seg"].numpy(), np.where(raw["seg"] < 0, 0, raw["seg"]))
    assert (raw["seg"] == -1).any()


def test_in_process_stream_is_seeded_and_leaves_global_state_alone(cases):
    def first_batch(seed):
        loader = _loader(cases, patch=(16, 32, 32), patch_size_before_aug=(24, 48, 48), seed=0)
        with make_loader(loader, training_transforms((16, 32, 32)), 0, seed=seed) as stream:
            return next(stream)["data"]

    np.random.seed(123)
    random.seed(123)
    before, before_py = np.random.get_state()[1].copy(), random.getstate()
    a, b, c = first_batch(1), first_batch(1), first_batch(2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    np.testing.assert_array_equal(np.random.get_state()[1], before)
    assert random.getstate() == before_py


# ----------------------------------------------------------------------------- two views


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


# ----------------------------------------------------------------------------- workers


def test_contrastive_transform_in_loader(cases):
    loader = _loader(cases, case_ids=["u"], patch=(32, 32), need_seg=False, seed=0)
    with make_loader(loader, contrastive_view_transforms(), num_workers=0, seed=0) as stream:
        batch = next(stream)
    assert batch["data_view1"].shape == batch["data_view2"].shape == (4, 2, 32, 32)
    assert isinstance(batch["data_view1"], torch.Tensor)
    assert not torch.equal(batch["data_view1"], batch["data_view2"])


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_worker_loader_yields_reproducible_batches_and_cleans_up(cases):
    patch = (16, 32, 32)
    read = patch_size_before_augmentation(patch)

    def run():
        loader = _loader(cases, patch=patch, batch_size=2, patch_size_before_aug=read, seed=3)
        stream = make_loader(loader, training_transforms(patch), num_workers=2, seed=3)
        with stream:
            batches = [next(stream) for _ in range(4)]
            pids = stream.worker_pids
            assert len(pids) == 2 and all(_alive(p) for p in pids)
        return batches, pids

    batches, pids = run()
    assert not any(_alive(p) for p in pids)
    assert not {p.pid for p in multiprocessing.active_children()} & set(pids)
    for b in batches:
        assert b["data"].shape == (2, 2, *patch) and b["seg"].shape == (2, 1, *patch)
    # workers 0 and 1 alternate and sample differently; a second run repeats the first
    assert not torch.equal(batches[0]["data"], batches[1]["data"])
    again, _ = run()
    for x, y in zip(batches, again):
        assert torch.equal(x["data"], y["data"]) and torch.equal(x["seg"], y["seg"])
