"""Tests for sslunet.data.sampling: patch sampling (shapes, padding, foreground oversampling,
seeding) from preprocessed cases read through memory maps.

The cases are the fixture ``cases`` (:mod:`tests.helpers.patches`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sslunet.data.sampling import read_padded
from sslunet.errors import InputError
from sslunet.preprocessing.preprocessor import class_locations
from sslunet.preprocessing.storage import load_case, load_properties, save_case
from tests.helpers.patches import patch_loader


@pytest.mark.parametrize("patch", [(8, 32, 32), (32, 32)])
def test_patch_shapes(cases, patch):
    batch = next(patch_loader(cases, patch=patch, batch_size=5, seed=1))
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
    batch = next(patch_loader(cases, case_ids=["c"], oversample_foreground=oversample, seed=2))
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
    loader = patch_loader(cases, patch=patch, oversample_foreground=1.0, patch_size_before_aug=read)
    for _ in range(5):
        seg = next(loader)["seg"]
        centre = (slice(None), 0) + tuple(slice(5, 5 + p) for p in patch)
        assert all(np.any(s > 0) for s in seg[centre])


def test_oversample_third_forces_last_samples_only(cases):
    loader = patch_loader(cases, case_ids=["a", "b"], patch=(8, 16, 16), batch_size=6, seed=4)
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
    next(patch_loader(cases, batch_size=3))
    assert len(calls) == 6  # image + labels for each of the three samples
    assert all(mode == "r" and kind is np.memmap for _, mode, kind in calls)


def test_same_seed_same_batches_other_seed_or_worker_differs(cases):
    def batches(loader, n=3):
        return [next(loader) for _ in range(n)]

    first, again = batches(patch_loader(cases, seed=7)), batches(patch_loader(cases, seed=7))
    for x, y in zip(first, again):
        np.testing.assert_array_equal(x["data"], y["data"])
        np.testing.assert_array_equal(x["seg"], y["seg"])
        assert x["keys"] == y["keys"]
    other = batches(patch_loader(cases, seed=8))
    assert not all(np.array_equal(x["data"], y["data"]) for x, y in zip(first, other))
    worker = patch_loader(cases, seed=7)
    worker.set_thread_id(1)
    assert not np.array_equal(next(worker)["data"], first[0]["data"])
    worker.set_thread_id(0)  # restarts the thread-0 stream
    np.testing.assert_array_equal(next(worker)["data"], first[0]["data"])


def test_unlabeled_cases(cases):
    loader = patch_loader(cases, case_ids=["u"], need_seg=False, oversample_foreground=1.0)
    batch = next(loader)
    assert "seg" not in batch and batch["data"].shape == (4, 2, 8, 32, 32)
    with pytest.raises(InputError, match="u_seg.npy"):
        patch_loader(cases, case_ids=["u"], need_seg=True)
    with pytest.raises(InputError, match="missing"):
        patch_loader(cases, case_ids=["nope"])


def _slice_of(patch: np.ndarray, data: np.ndarray) -> int:
    """Which slice of ``data (C, Z, Y, X)`` a 2d patch ``(C, Y, X)`` was read from (the image
    is random noise, so its centre value occurs in one slice only)."""
    centre = patch[0, patch.shape[1] // 2, patch.shape[2] // 2]
    return int(np.flatnonzero([np.isin(centre, data[0, z]) for z in range(data.shape[1])])[0])


@pytest.mark.parametrize("oversample", [0.0, 1.0])
def test_sparse_slices_2d_patches_come_from_annotated_slices_only(cases, oversample):
    data = np.load(cases / "a.npy")
    loader = patch_loader(cases, case_ids=["a"], patch=(32, 32), seed=3, ignore_label=7,
                          annotated_slices={"a": [9, 15]}, oversample_foreground=oversample)
    seen = set()
    for _ in range(6):
        batch = next(loader)
        assert not np.any(batch["seg"] == 7)  # a whole annotated slice: nothing ignored
        seen |= {_slice_of(p, data) for p in batch["data"]}
        if oversample == 1.0:  # forced: foreground inside the annotated slices (ball: z 8-12)
            assert all(np.any(s > 0) for s in batch["seg"])
    assert seen <= {9, 15} and (seen == {9} if oversample == 1.0 else seen == {9, 15})


def test_sparse_slices_3d_patches_mark_the_other_slices_ignored(cases):
    loader = patch_loader(cases, case_ids=["a"], patch=(8, 32, 32), seed=5, ignore_label=7,
                          annotated_slices={"a": [9, 15]}, oversample_foreground=0.5)
    for _ in range(5):
        for seg in next(loader)["seg"][:, 0]:  # (8, 32, 32) each
            ignored = [bool(np.all(row == 7)) for row in seg]
            assert 1 <= ignored.count(False) <= 2  # centred on an annotated slice
            assert not any(np.any(row == 7) for row, ign in zip(seg, ignored) if not ign)


def test_dataset_ignore_label_centres_unforced_patches_on_annotated_voxels(cases):
    data, seg, props = load_case(cases, "a", mmap=False)
    sparse = np.full_like(seg, 3)  # (1, Z, Y, X): only slice 4 annotated
    sparse[0, 4] = np.where(seg[0, 4] > 0, seg[0, 4], 0)
    save_case(cases, data, sparse, dataclasses.replace(
        props, class_locations=class_locations(sparse[0], 0, ignore=3)))
    assert set(load_properties(cases, "a").class_locations) == {"annotated"}
    sparse_loader = patch_loader(cases, case_ids=["a"], patch=(32, 32), oversample_foreground=0.0,
                                 ignore_label=3)
    dense_loader = patch_loader(cases, case_ids=["a"], patch=(32, 32), oversample_foreground=0.0)
    for _ in range(4):
        assert all(np.any(s != 3) for s in next(sparse_loader)["seg"])
    assert not all(np.any(s != 3) for _ in range(4) for s in next(dense_loader)["seg"])
