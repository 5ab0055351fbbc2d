"""Tests for sslunet.preprocessing.preprocessor: preprocessing a case and inverting it.

Round trips compare against the original label map (exact where no resampling happens, Dice
otherwise); z-scoring inside the mask against naive numpy.
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
from sslunet.preprocessing.preprocessor import (
    preprocess_case,
    revert_logits,
    revert_segmentation,
)
from sslunet.preprocessing.resampling import (
    new_shape,
)
from sslunet.preprocessing.storage import (
    load_class_locations,
    load_properties,
    save_case,
)
from tests.helpers.oracles import naive_bbox


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
    probs = revert_logits(10.0 * one_hot(pseg[0], 3), props, plans, cfg)  # logits
    assert probs.shape == (3, *shape)
    np.testing.assert_allclose(probs.sum(0), 1.0, rtol=1e-5)  # probabilities, not logits
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
    probs = revert_logits(10.0 * one_hot(pseg[0], 3), props, plans, cfg)  # logits
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
    # the samplers' shortcut reads the same class locations as the full properties
    locations = load_class_locations(tmp_path / "pp", case.case_id)
    assert locations == props.class_locations and set(locations) == {"1", "2"}
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
