"""Tests for sslunet.dataset.verify: the per-case checks (geometry of label and channels, label
values, finite voxels) and the dataset-wide verification."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from sslunet.dataset.raw import load_raw_dataset
from sslunet.dataset.verify import load_checked_case, verify_dataset
from sslunet.errors import InputError


def test_load_checked_case_returns_arrays(raw_dataset, synthetic_case):
    root = raw_dataset(n_labelled=1, n_channels=2, shape=(6, 10, 12), spacing=(0.5, 0.6, 2.0))
    case = load_raw_dataset(root).cases[0]
    data, seg, geo = load_checked_case(case, {"bg": 0, "a": 1, "b": 2})
    ref_data, ref_seg = synthetic_case((6, 10, 12), 2, (0, 1, 2), seed=0)
    assert data.shape == (2, 6, 10, 12) and data.dtype == np.float32
    assert seg.shape == (6, 10, 12) and seg.dtype == np.int16
    np.testing.assert_array_equal(data, ref_data)
    np.testing.assert_array_equal(seg, ref_seg)
    assert geo.array_spacing == pytest.approx((2.0, 0.6, 0.5))


def _rewrite_label(case, writer, **geometry):
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
    writer(case.label, arr, **geometry)


@pytest.mark.parametrize("problem", ["spacing", "origin", "direction", "values", "nan",
                                     "fraction"])
def test_case_checks_raise_input_error_naming_file(raw_dataset, sitk_image_writer, oblique,
                                                   problem):
    # .mha: ITK's NIfTI reader silently turns NaN/inf into 0, so only other formats can
    # carry non-finite voxels to our check
    root = raw_dataset(n_labelled=1, shape=(4, 8, 8), file_ending=".mha")
    case = load_raw_dataset(root).cases[0]
    offender = case.label
    if problem == "spacing":
        _rewrite_label(case, sitk_image_writer, spacing=(1.0, 1.0, 2.0))
    elif problem == "origin":
        _rewrite_label(case, sitk_image_writer, origin=(0.0, 5.0, 0.0))
    elif problem == "direction":
        _rewrite_label(case, sitk_image_writer, direction=oblique(10.0))
    elif problem == "values":
        sitk_image_writer(case.label, np.full((4, 8, 8), 7, np.uint8))
    elif problem == "nan":
        img = np.ones((4, 8, 8), np.float32)
        img[1, 2, 3] = np.nan
        sitk_image_writer(case.images[0], img)
        offender = case.images[0]
    else:
        sitk_image_writer(case.label, np.full((4, 8, 8), 0.5, np.float32))
    with pytest.raises(InputError) as err:
        load_checked_case(case, {"bg": 0, "a": 1, "b": 2})
    assert err.value.path == str(offender)


def test_verify_dataset_counts_cases(raw_dataset):
    ds = load_raw_dataset(raw_dataset(n_labelled=2, n_unlabeled=1, n_test=1))
    assert verify_dataset(ds, num_processes=1, progress=False) == 4
    assert verify_dataset(ds, num_processes=2, progress=False, include_test=False) == 3
