"""Tests for sslunet.evaluation.metrics: known answers and a brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from sslunet.evaluation.metrics import (
    case_metrics,
    dice,
    directed_surface_distances,
    hd95,
    volume_difference_ml,
)
from tests.helpers.label_folders import blob


# --------------------------------------------------------------------------- naive references


def naive_surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it, by explicit neighbour checks."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    out = np.zeros_like(mask)
    for axis in range(mask.ndim):
        for step in (-1, 1):
            out |= ~np.roll(padded, step, axis=axis)[inner]
    return mask & out


def naive_hd95(a: np.ndarray, b: np.ndarray, spacing) -> float:
    pa = np.argwhere(naive_surface(a)) * np.asarray(spacing)
    pb = np.argwhere(naive_surface(b)) * np.asarray(spacing)
    d = cdist(pa, pb)
    return float(np.percentile(np.concatenate([d.min(axis=1), d.min(axis=0)]), 95))


# --------------------------------------------------------------------------- Dice


def test_dice_two_cubes_half_overlap():
    a = np.zeros((8, 8, 8), bool)
    b = np.zeros_like(a)
    a[0:4, 0:4, 0:4] = True
    b[2:6, 0:4, 0:4] = True  # overlap 2x4x4 = 32 voxels of 64 each
    assert dice(a, b) == pytest.approx(0.5)
    c = np.zeros_like(a)
    c[1:4, 1:4, 1:4] = True  # 27 voxels, all inside a
    assert dice(a, c) == pytest.approx(2 * 27 / (64 + 27))
    assert dice(a, a) == 1.0


def test_empty_mask_rules():
    empty = np.zeros((5, 6, 7), bool)
    full = empty.copy()
    full[1:3, 2:4, 3:5] = True
    assert dice(empty, empty) == 1.0 and hd95(empty, empty, (1, 1, 1)) == 0.0
    assert dice(empty, full) == 0.0 and math.isnan(hd95(empty, full, (1, 1, 1)))
    assert dice(full, empty) == 0.0 and math.isnan(hd95(full, empty, (1, 1, 1)))


# --------------------------------------------------------------------------- HD95


def test_hd95_parallel_planes_and_anisotropic_shift():
    spacing = (5.0, 1.0, 1.0)
    a = np.zeros((10, 12, 12), bool)
    a[3, 2:9, 2:9] = True
    assert hd95(a, np.roll(a, 1, axis=0), spacing) == pytest.approx(5.0)
    assert hd95(a, np.roll(a, 2, axis=0), spacing) == pytest.approx(10.0)
    # The same one-voxel shift along a 1 mm axis: every surface point of a within 1 mm of b.
    assert hd95(a, np.roll(a, 1, axis=1), spacing) == pytest.approx(1.0)
    # A one-voxel shift of a thick slab along the 5 mm axis: only the two caps move, by 5 mm.
    slab = np.zeros((10, 12, 12), bool)
    slab[2:4, 2:9, 2:9] = True
    assert hd95(slab, np.roll(slab, 1, axis=0), spacing) == pytest.approx(5.0)
    assert hd95(slab, np.roll(slab, 1, axis=0), (1.0, 5.0, 5.0)) == pytest.approx(1.0)


def test_concentric_cubes_directed_distances():
    outer = np.zeros((22, 22, 22), bool)
    outer[1:21, 1:21, 1:21] = True
    inner = np.zeros_like(outer)
    inner[6:16, 6:16, 6:16] = True  # 5 voxels inside every face of the outer cube
    inner_to_outer, outer_to_inner = directed_surface_distances(inner, outer, (1.0, 1.0, 1.0))
    np.testing.assert_allclose(inner_to_outer, 5.0)
    assert outer_to_inner.min() == pytest.approx(5.0)
    assert outer_to_inner.max() == pytest.approx(5.0 * math.sqrt(3))  # corner to corner
    value = hd95(inner, outer, (2.0, 2.0, 2.0))
    assert value == pytest.approx(naive_hd95(inner, outer, (2.0, 2.0, 2.0)))
    assert 10.0 < value < 10.0 * math.sqrt(3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    spacing = (2.5, 0.7, 1.3)
    shape = (12, 16, 14)
    a, b = blob(rng, shape), blob(rng, shape, 0.6)
    assert hd95(a, b, spacing) == pytest.approx(naive_hd95(a, b, spacing))
    # Masks touching the image border: the crop must not change the surface there.
    c = np.zeros(shape, bool)
    c[:5, 3:, :] = True
    assert hd95(a, c, spacing) == pytest.approx(naive_hd95(a, c, spacing))
    # 2d works the same way.
    a2, b2 = blob(rng, (20, 18)), blob(rng, (20, 18))
    assert hd95(a2, b2, (0.5, 3.0)) == pytest.approx(naive_hd95(a2, b2, (0.5, 3.0)))


def test_hd95_small_object_far_away():
    a = np.zeros((6, 30, 30), bool)
    a[2:4, 2:6, 2:6] = True
    b = a.copy()
    b[2:4, 25:27, 25:27] = True  # a false-positive island makes HD95 large
    assert hd95(a, b, (3.0, 1.0, 1.0)) == pytest.approx(naive_hd95(a, b, (3.0, 1.0, 1.0)))
    assert hd95(a, b, (3.0, 1.0, 1.0)) > 20


# --------------------------------------------------------------------------- volume, per case


def test_volume_difference_in_ml():
    spacing = (2.0, 1.0, 0.5)  # 1 mm^3 per voxel
    ref = np.zeros((20, 20, 20), bool)
    ref[:10, :10, :10] = True  # 1000 mm^3 = 1 ml
    pred = np.zeros_like(ref)
    pred[:15, :10, :10] = True  # 1.5 ml
    diff, rel = volume_difference_ml(ref, pred, spacing)
    assert diff == pytest.approx(0.5) and rel == pytest.approx(0.5)
    diff, rel = volume_difference_ml(ref, pred, (4.0, 1.0, 0.5))
    assert diff == pytest.approx(1.0) and rel == pytest.approx(0.5)
    diff, rel = volume_difference_ml(pred, ref, spacing)
    assert diff == pytest.approx(-0.5) and rel == pytest.approx(-1 / 3)
    empty = np.zeros_like(ref)
    assert volume_difference_ml(empty, empty, spacing) == (0.0, 0.0)
    diff, rel = volume_difference_ml(empty, pred, spacing)
    assert diff == pytest.approx(1.5) and math.isnan(rel)


def test_case_metrics_per_class():
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 3, (8, 9, 10))
    pred = np.where(rng.random(ref.shape) < 0.2, 0, ref)
    spacing = (3.0, 1.0, 0.5)
    out = case_metrics(ref, pred, spacing, {"background": 0, "a": 1, "b": 2})
    assert list(out) == ["a", "b"]
    for name, value in (("a", 1), ("b", 2)):
        assert out[name]["dice"] == pytest.approx(dice(ref == value, pred == value))
        assert out[name]["hd95"] == pytest.approx(hd95(ref == value, pred == value, spacing))
    same = case_metrics(ref, ref, spacing, {"a": 1, "b": 2, "absent": 7})
    assert all(m["dice"] == 1.0 and m["hd95"] == 0.0 for m in same.values())


def test_case_metrics_skip_voxels_whose_reference_is_ignored():
    rng = np.random.default_rng(4)
    ref = rng.integers(0, 3, (6, 8, 8))
    ref[:2] = 3  # unannotated slices
    pred = rng.integers(0, 3, ref.shape)
    out = case_metrics(ref, pred, (1.0, 1.0, 1.0), {"background": 0, "a": 1, "b": 2, "ignore": 3},
                       ignore=3)
    assert list(out) == ["a", "b"]
    for name, value in (("a", 1), ("b", 2)):
        assert out[name]["dice"] == pytest.approx(dice(ref[2:] == value, pred[2:] == value))
