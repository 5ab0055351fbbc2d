"""Preprocessing, its inversion, resampling, normalisation and the on-disk case format.

Round trips compare against the original label map (exact where no resampling happens, Dice
otherwise); resampling is checked against analytic functions and against the nearest-neighbour
rule along the thick-slice axis; normalisation against naive numpy.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk

from sslunet.dataset.imageio import Geometry, read_array, write_array
from sslunet.dataset.raw import load_raw_dataset
from sslunet.dataset.verify import load_checked_case
from sslunet.planning.planner import plan_experiment
from sslunet.plans import CaseFingerprint, ChannelIntensityStats, Fingerprint
from sslunet.preprocessing.normalization import normalize
from sslunet.preprocessing.preprocessor import (
    preprocess_case,
    revert_probabilities,
    revert_segmentation,
)
from sslunet.preprocessing.resampling import new_shape, resample_data, resample_seg
from sslunet.preprocessing.storage import (
    CaseProperties,
    case_paths,
    is_case_done,
    list_cases,
    load_case,
    load_properties,
    save_case,
)
from sslunet.utils.atomic import save_npy

EYE = tuple(float(v) for v in np.eye(3).ravel())
STATS = ChannelIntensityStats(120.0, 118.0, 25.0, 1.0, 250.0, 60.0, 200.0, "foreground")

# --------------------------------------------------------------------------- helpers


def plans_for(array_spacing, shape, target=None, mask_norm=False, n_channels=1,
              config="3d_fullres", scheme=None):
    """Plans for a dataset of cases like the one under test, with the configuration's target
    spacing (transposed order), mask use and scheme overridden as the test needs."""
    cases = tuple(CaseFingerprint(f"c{i}", "imagesTr", tuple(array_spacing), tuple(shape),
                                  tuple(shape)) for i in range(4))
    fp = Fingerprint("Dataset001_Toy", n_channels, {str(c): "T2" for c in range(n_channels)},
                     {"background": 0, "a": 1, "b": 2}, cases, (STATS,) * n_channels, 0.5)
    plans = plan_experiment(fp, configurations=("2d", "3d_fullres"))
    changes = {"use_mask_for_norm": (mask_norm,) * n_channels}
    if target is not None:
        changes["spacing"] = tuple(target)
    if scheme is not None:
        changes["normalization_schemes"] = (scheme,) * n_channels
    return plans, dataclasses.replace(plans.configurations[config], **changes)


def geometry(sitk_spacing, shape, origin=(0.0, 0.0, 0.0), direction=EYE) -> Geometry:
    return Geometry(tuple(sitk_spacing), tuple(origin), tuple(direction),
                    tuple(reversed(shape)))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def one_hot(seg: np.ndarray, k: int) -> np.ndarray:
    """(*spatial) labels (-1 counts as background) -> (k, *spatial) float32."""
    seg = np.maximum(seg, 0)
    return np.stack([seg == c for c in range(k)]).astype(np.float32)


def naive_bbox(data):
    idx = np.argwhere(np.any(data != 0, axis=0))
    return tuple((int(lo), int(hi) + 1) for lo, hi in zip(idx.min(0), idx.max(0)))


# --------------------------------------------------------------------------- round trips


def test_round_trip_exact_without_resampling(synthetic_case):
    shape = (16, 20, 12)  # numpy (z, y, x); x is the coarse axis
    data, seg = synthetic_case(shape, 2, (0, 1, 2), seed=3, border=2)
    geo = geometry((5.0, 1.0, 1.0), shape)  # sitk (x, y, z): x coarse
    plans, cfg = plans_for(geo.array_spacing, shape, n_channels=2)
    assert plans.transpose_forward == (2, 0, 1)
    out, pseg, props = preprocess_case(data, seg, geo, plans, cfg, "c0", "imagesTr")
    box = naive_bbox(data)
    crop = tuple(slice(a, b) for a, b in box)
    assert props.bbox == box and box[0] == (2, 14)  # the zero border was cropped
    # naive reference: crop, transpose (x first), per-image z-score over the crop
    for c in range(2):
        x = data[c][crop].transpose(2, 0, 1)
        np.testing.assert_allclose(out[c], (x - x.mean()) / x.std(), atol=1e-4)
    ref_seg = seg[crop].transpose(2, 0, 1).astype(np.int16)
    outside = ~np.any(data[(slice(None), *crop)] != 0, axis=0).transpose(2, 0, 1)
    ref_seg[(ref_seg == 0) & outside] = -1  # known background outside the body
    assert (ref_seg == -1).any()
    np.testing.assert_array_equal(pseg[0], ref_seg)
    assert pseg.dtype == np.int8 and out.dtype == np.float32
    assert props.spacing == pytest.approx((5.0, 1.0, 1.0))
    assert props.shape_after_resample == props.shape_after_crop == out.shape[1:]
    back = revert_segmentation(pseg[0], props, plans, cfg)
    assert back.shape == shape
    np.testing.assert_array_equal(back, seg)
    probs = revert_probabilities(one_hot(pseg[0], 3), props, plans, cfg)
    assert probs.shape == (3, *shape)
    np.testing.assert_array_equal(probs.argmax(0), seg)


@pytest.mark.parametrize("sitk_spacing, shape, target, forward", [
    ((1.5, 1.5, 1.5), (24, 32, 32), (1.0, 1.0, 1.0), (0, 1, 2)),
    # x-anisotropic: x (4 mm) goes first and is upsampled with nearest, y/z by a
    # non-integer factor with linear-per-label
    ((4.0, 0.8, 0.8), (32, 32, 10), (2.0, 0.6, 0.6), (2, 0, 1)),
])
def test_round_trip_with_resampling(synthetic_case, sitk_spacing, shape, target, forward):
    data, seg = synthetic_case(shape, 1, (0, 1, 2), seed=5, border=2)
    geo = geometry(sitk_spacing, shape)
    plans, cfg = plans_for(geo.array_spacing, shape, target=target)
    assert plans.transpose_forward == forward
    out, pseg, props = preprocess_case(data, seg, geo, plans, cfg, "c0", "imagesTr")
    expected = new_shape(props.shape_after_crop, props.spacing, target)
    assert out.shape[1:] == pseg.shape[1:] == expected == props.shape_after_resample
    assert expected != props.shape_after_crop
    back = revert_segmentation(pseg[0], props, plans, cfg)
    probs = revert_probabilities(one_hot(pseg[0], 3), props, plans, cfg)
    assert back.shape == probs.shape[1:] == shape
    for label in (1, 2):
        assert dice(back == label, seg == label) > 0.97
        assert dice(probs.argmax(0) == label, seg == label) > 0.97
    outside = np.ones(shape, bool)
    outside[tuple(slice(a, b) for a, b in props.bbox)] = False
    assert (back[outside] == 0).all() and (probs[0][outside] == 1).all()


def test_2d_config_resamples_in_plane_only(synthetic_case):
    shape = (6, 20, 20)
    data, seg = synthetic_case(shape, 1, (0, 1, 2), seed=1)
    geo = geometry((0.7, 0.7, 3.0), shape)
    plans, cfg = plans_for(geo.array_spacing, shape, target=(1.0, 1.0), config="2d")
    out, pseg, props = preprocess_case(data, seg, geo, plans, cfg, "c0", "imagesTr")
    assert props.target_spacing == pytest.approx((3.0, 1.0, 1.0))
    assert out.shape[1] == props.shape_after_crop[0]  # slices untouched
    assert out.shape[2:] == new_shape(props.shape_after_crop, props.spacing,
                                      props.target_spacing)[1:]


def test_oblique_case_keeps_geometry_through_the_round_trip(raw_dataset, oblique, tmp_path):
    direction = oblique(35.0, axis=1)
    root = raw_dataset(n_labelled=1, shape=(10, 24, 20), spacing=(0.9, 1.1, 3.0),
                       origin=(12.5, -40.0, 7.25), direction=direction)
    case = load_raw_dataset(root).cases[0]
    data, seg, geo = load_checked_case(case, None)
    plans, cfg = plans_for(geo.array_spacing, data.shape[1:], target=(3.0, 1.0, 1.0))
    out, pseg, props = preprocess_case(data, seg, geo, plans, cfg, case.case_id, case.source)
    save_case(tmp_path / "pp", out, pseg, props)
    props = load_properties(tmp_path / "pp", case.case_id)
    assert props.sitk_spacing == pytest.approx((0.9, 1.1, 3.0))
    assert props.sitk_origin == pytest.approx((12.5, -40.0, 7.25))
    assert props.sitk_direction == pytest.approx(direction, abs=1e-6)
    back = revert_segmentation(pseg[0], props, plans, cfg)
    target_geo = Geometry(props.sitk_spacing, props.sitk_origin, props.sitk_direction,
                          tuple(reversed(props.original_shape)))
    write_array(tmp_path / "pred.nii.gz", back, target_geo)
    written, written_geo = read_array(tmp_path / "pred.nii.gz")
    original = sitk.ReadImage(str(case.label))
    assert written_geo.differences(geo) == []
    assert sitk.ReadImage(str(tmp_path / "pred.nii.gz")).GetDirection() == pytest.approx(
        original.GetDirection(), abs=1e-6)
    for label in (1, 2):
        assert dice(written == label, seg == label) > 0.97


# --------------------------------------------------------------------------- normalisation


def test_zscore_inside_mask(synthetic_case):
    shape = (12, 24, 24)
    data, seg = synthetic_case(shape, 2, (0, 1, 2), seed=2, border=1)
    geo = geometry((1.0, 1.0, 1.0), shape)
    plans, cfg = plans_for(geo.array_spacing, shape, mask_norm=True, n_channels=2)
    out, _, props = preprocess_case(data, seg, geo, plans, cfg, "c0", "imagesTr")
    crop = tuple(slice(a, b) for a, b in props.bbox)
    mask = np.any(data[(slice(None), *crop)] != 0, axis=0)
    assert 0 < mask.mean() < 0.9  # the crop box still holds background corners
    for c in range(2):
        inside = out[c][mask].astype(np.float64)
        assert inside.mean() == pytest.approx(0.0, abs=1e-4)
        assert inside.std() == pytest.approx(1.0, abs=1e-4)
        assert (out[c][~mask] == 0).all()
    # without the mask the whole crop is standardised and the background is not 0
    plans, cfg = plans_for(geo.array_spacing, shape, mask_norm=False, n_channels=2)
    out, _, _ = preprocess_case(data, seg, geo, plans, cfg, "c0", "imagesTr")
    assert out[0].mean() == pytest.approx(0.0, abs=1e-4)
    assert out[0].std() == pytest.approx(1.0, abs=1e-4)
    assert (out[0][~mask] != 0).all()


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


# --------------------------------------------------------------------------- resampling


def _blobby_labels(shape, seed, n_labels=3):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random((n_labels + 1, *shape)), (0, 2, 2, 2))
    return field.argmax(0).astype(np.int16)  # (z, y, x) labels 0..n_labels, big blobs


@pytest.mark.parametrize("out_shape, spacing, target", [
    ((30, 36, 40), (1.0, 1.0, 1.0), (0.8, 0.89, 0.8)),
    ((20, 20, 24), (1.0, 1.0, 1.0), (1.2, 1.2, 1.0)),
    ((48, 24, 24), (4.0, 1.0, 1.0), (2.0, 1.0, 1.0)),  # separate z
])
def test_resample_seg_keeps_label_set(out_shape, spacing, target):
    seg = _blobby_labels((24, 24, 24), seed=1)
    for order in (0, 1):
        out = resample_seg(seg, out_shape, spacing, target, order=order)
        assert out.shape == out_shape and out.dtype == seg.dtype
        assert set(np.unique(out)) == set(np.unique(seg)) == {0, 1, 2, 3}


def _smooth(z, y, x):
    return np.sin(2 * np.pi * z / 23.0) * np.cos(2 * np.pi * y / 29.0) + 0.02 * x


def test_resample_data_cubic_is_accurate_on_smooth_function():
    n_in, n_out = (20, 24, 28), (29, 30, 40)
    grid = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in n_in], indexing="ij")
    vol = _smooth(*grid)[None].astype(np.float32)
    spacing = (1.0, 1.0, 1.0)
    target = tuple(s * i / o for s, i, o in zip(spacing, n_in, n_out))
    # output voxel i sits at input coordinate (i + 0.5) * n_in / n_out - 0.5
    coords = [(np.arange(o) + 0.5) * i / o - 0.5 for i, o in zip(n_in, n_out)]
    expected = _smooth(*np.meshgrid(*coords, indexing="ij"))
    inner = tuple(slice(3, -3) for _ in range(3))  # away from the clamped borders
    errors = {}
    for order in (1, 3):
        out = resample_data(vol, n_out, spacing, target, order=order)
        assert out.shape == (1, *n_out) and out.dtype == np.float32
        errors[order] = np.abs(out[0][inner] - expected[inner]).max()
    assert errors[3] < 2e-3
    assert errors[3] < errors[1] / 5


def test_separate_z_uses_nearest_along_thick_axis():
    rng = np.random.default_rng(4)
    vol = rng.normal(size=(1, 6, 10, 10)).astype(np.float32)  # rough: interpolation shows
    out = resample_data(vol, (15, 10, 10), (5.0, 1.0, 1.0), (2.0, 1.0, 1.0), order=3)
    src = np.clip(np.round((np.arange(15) + 0.5) * 6 / 15 - 0.5), 0, 5).astype(int)
    for k, j in enumerate(src):
        np.testing.assert_array_equal(out[0, k], vol[0, j])  # exact copies of slices
    # with in-plane resampling too, every slice is the in-plane resampling of a source slice
    out = resample_data(vol, (15, 14, 14), (5.0, 1.0, 1.0), (2.0, 0.7, 0.7), order=3)
    in_plane = resample_data(vol, (6, 14, 14), (5.0, 1.0, 1.0), (5.0, 0.7, 0.7), order=3)
    for k, j in enumerate(src):
        np.testing.assert_allclose(out[0, k], in_plane[0, j], atol=1e-5)
    # the same spacing change below the anisotropy threshold interpolates across slices
    smooth = resample_data(vol, (15, 10, 10), (5.0, 1.0, 1.0), (2.0, 1.0, 1.0), order=3,
                           aniso_threshold=10.0)
    assert not any(np.allclose(smooth[0, k], vol[0, j]) for k, j in enumerate(src) if k % 5)


def test_separate_z_also_when_only_target_is_anisotropic():
    vol = np.random.default_rng(0).normal(size=(1, 8, 8, 8)).astype(np.float32)
    # source isotropic, target 4:1 -> the coarse target axis is resampled with nearest
    out = resample_data(vol, (2, 8, 8), (1.0, 1.0, 1.0), (4.0, 1.0, 1.0), order=3)
    assert out.shape == (1, 2, 8, 8)
    for k in range(2):
        assert any(np.array_equal(out[0, k], vol[0, j]) for j in range(8))


# --------------------------------------------------------------------------- class locations


def test_class_locations_point_at_their_label(synthetic_case):
    shape = (10, 24, 24)
    data, seg = synthetic_case(shape, 1, (0, 1, 2), seed=0)
    geo = geometry((1.0, 1.0, 1.0), shape)
    plans, cfg = plans_for(geo.array_spacing, shape)
    _, pseg, props = preprocess_case(data, seg, geo, plans, cfg, "c0", "imagesTr", 7)
    assert set(props.class_locations) == {"1", "2"}
    for label, coords in props.class_locations.items():
        coords = np.asarray(coords)
        assert len(coords) == min(2000, int((pseg[0] == int(label)).sum()))
        assert (pseg[0][tuple(coords.T)] == int(label)).all()
    _, _, again = preprocess_case(data, seg, geo, plans, cfg, "c0", "imagesTr", 7)
    assert again.class_locations == props.class_locations  # seeded by the case index


# --------------------------------------------------------------------------- storage


def _props(case_id, source, has_seg=True):
    return CaseProperties(case_id, source, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), EYE, (2, 3, 4),
                          ((0, 2), (0, 3), (0, 4)), (2, 3, 4), (1.0, 1.0, 1.0),
                          (1.0, 1.0, 1.0), (2, 3, 4), has_seg, {"1": [[0, 1, 2]]})


def test_save_load_case_with_mmap(tmp_path):
    data = np.arange(48, dtype=np.float64).reshape(2, 2, 3, 4)
    seg = (np.arange(24).reshape(1, 2, 3, 4) % 3 - 1).astype(np.int16)
    save_case(tmp_path, data, seg, _props("a", "imagesTr"))
    d, s, p = load_case(tmp_path, "a")
    assert isinstance(d, np.memmap) and isinstance(s, np.memmap)
    assert d.dtype == np.float32 and s.dtype == np.int8
    np.testing.assert_array_equal(d, data)
    np.testing.assert_array_equal(s, seg)
    assert p == _props("a", "imagesTr")
    d, s, _ = load_case(tmp_path, "a", mmap=False)
    assert not isinstance(d, np.memmap)
    # re-saving without a label (now unlabeled) removes the stale _seg file
    save_case(tmp_path, data, None, _props("a", "imagesUnlabeled", has_seg=False))
    assert load_case(tmp_path, "a")[1] is None
    assert not case_paths(tmp_path, "a")[1].exists()


def test_is_case_done_only_with_properties(tmp_path):
    data_p, _, props_p = case_paths(tmp_path, "b")
    save_npy(data_p, np.zeros((1, 2, 2, 2)))
    assert not is_case_done(tmp_path, "b")
    assert list_cases(tmp_path) == []
    save_case(tmp_path, np.zeros((1, 2, 3, 4)), None, _props("b", "imagesTr", False))
    assert is_case_done(tmp_path, "b")
    props_p.unlink()
    assert not is_case_done(tmp_path, "b")


def test_list_cases_by_source_ignores_leftovers(tmp_path):
    for cid, src in (("u1", "imagesUnlabeled"), ("t1", "imagesTr"), ("t0", "imagesTr"),
                     ("s1", "imagesTs")):
        save_case(tmp_path, np.zeros((1, 2, 3, 4)), None, _props(cid, src, False))
    (tmp_path / ".x9.npy.tmp-abc123.npy").write_bytes(b"partial")
    (tmp_path / ".x9.json.tmp-abc123").write_text("{")
    save_npy(tmp_path / "x8.npy", np.zeros(3))  # data without properties: unfinished
    assert list_cases(tmp_path) == ["s1", "t0", "t1", "u1"]
    assert list_cases(tmp_path, ("imagesTr",)) == ["t0", "t1"]
    assert list_cases(tmp_path, ("imagesUnlabeled", "imagesTs")) == ["s1", "u1"]
    assert list_cases(tmp_path / "missing") == []
