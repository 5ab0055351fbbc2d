"""Raw dataset reading, ``-d`` resolution, image IO, per-case checks and the fingerprint.

The CLI's one-line errors are tested end to end in ``test_plan_cli.py``; here each library
function is checked directly, against naive recomputations where there is a number to check.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from sslunet.dataset.imageio import Geometry, read_array, read_header, write_array
from sslunet.dataset.raw import load_raw_dataset
from sslunet.dataset.resolve import resolve_dataset_name, resolve_raw_dataset
from sslunet.dataset.verify import load_checked_case, verify_dataset
from sslunet.errors import InputError
from sslunet.planning.fingerprint import extract_fingerprint
from sslunet.preprocessing.cropping import nonzero_bbox

# --------------------------------------------------------------------------- raw layout


def test_load_raw_dataset_lists_cases_by_source(raw_dataset):
    root = raw_dataset(n_labelled=3, n_unlabeled=2, n_test=1, n_channels=2)
    ds = load_raw_dataset(root)
    assert ds.name == "Dataset001_Toy" and ds.num_channels == 2
    assert [c.case_id for c in ds.cases_from("imagesTr")] == ["case_000", "case_001", "case_002"]
    assert [c.case_id for c in ds.cases_from("imagesUnlabeled")] == ["unl_000", "unl_001"]
    assert [c.case_id for c in ds.cases_from("imagesTs")] == ["ts_000"]
    case = ds.cases_from("imagesTr")[1]
    assert [p.name for p in case.images] == ["case_001_0000.nii.gz", "case_001_0001.nii.gz"]
    assert case.label.name == "case_001.nii.gz"
    assert all(c.label is None for c in ds.cases_from("imagesUnlabeled"))
    assert ds.cases_from("imagesTs")[0].label.parent.name == "labelsTs"
    assert ds.labels == {"background": 0, "left": 1, "right": 2}


def test_hidden_and_foreign_files_are_ignored(raw_dataset):
    root = raw_dataset(n_labelled=2)
    (root / "imagesTr" / ".DS_Store").write_text("x")
    (root / "imagesTr" / "notes.txt").write_text("x")
    (root / "labelsTr" / ".case_000.nii.gz.tmp").write_text("x")
    assert len(load_raw_dataset(root).cases) == 2


@pytest.mark.parametrize("mutate, offender, message", [
    (lambda r: (r / "imagesTr" / "case_000_0000.nii.gz").rename(r / "imagesTr" / "case_000.nii.gz"),
     "case_000.nii.gz", "CASE_XXXX"),
    (lambda r: (r / "labelsTr" / "case_001.nii.gz").unlink(), "case_001_0000.nii.gz", "no label"),
    (lambda r: shutil.copy(r / "imagesTr" / "case_000_0000.nii.gz",
                           r / "imagesTr" / "case_000_0001.nii.gz"),
     "case_000_0001.nii.gz", "not declared"),
    (lambda r: shutil.copytree(r / "imagesTr", r / "imagesUnlabeled"), "imagesUnlabeled",
     "appears in both"),
])
def test_structural_problems_name_the_file(raw_dataset, mutate, offender, message):
    root = raw_dataset(n_labelled=2)
    mutate(root)
    with pytest.raises(InputError, match=message) as err:
        load_raw_dataset(root)
    assert err.value.path is not None and err.value.path.endswith(offender)


@pytest.mark.parametrize("change, message", [
    ({"numTraining": 5}, "numTraining is 5"),
    ({"file_ending": ".png"}, "file_ending"),
    ({"channel_names": {"1": "T2"}}, "0..C-1"),
    ({"labels": {"background": 0, "a": 1.5}}, "integers"),
    ({"labels": {"a": 1, "b": 2}}, "consecutive"),
])
def test_dataset_json_problems(raw_dataset, change, message):
    root = raw_dataset(n_labelled=2)
    meta = json.loads((root / "dataset.json").read_text())
    meta.update(change)
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=message) as err:
        load_raw_dataset(root)
    assert err.value.path.endswith("dataset.json")


# --------------------------------------------------------------------------- -d resolution


def _make_layout(raw_root, *names):
    for n in names:
        (raw_root / n).mkdir(parents=True)
        (raw_root / n / "dataset.json").write_text("{}")


@pytest.mark.parametrize("spec", ["2", "002", "CMR", "cmr", "Dataset002_CMR", "dataset002_cmr"])
def test_resolve_dataset_name_forms(tmp_path, spec):
    _make_layout(tmp_path, "Dataset002_CMR", "Dataset003_ACDC", "Dataset012_CMRx")
    assert resolve_dataset_name(spec, [tmp_path]) == "Dataset002_CMR"


def test_resolve_unknown_lists_known(tmp_path):
    _make_layout(tmp_path, "Dataset002_CMR", "Dataset003_ACDC")
    (tmp_path / "not_a_dataset").mkdir()
    with pytest.raises(InputError) as err:
        resolve_dataset_name("Prostate", [tmp_path])
    assert "Dataset002_CMR, Dataset003_ACDC" in str(err.value)
    assert "not_a_dataset" not in str(err.value)


def test_resolve_ambiguous(tmp_path):
    _make_layout(tmp_path, "Dataset002_CMR", "Dataset012_CMR")
    with pytest.raises(InputError, match="ambiguous"):
        resolve_dataset_name("CMR", [tmp_path])
    assert resolve_dataset_name("12", [tmp_path]) == "Dataset012_CMR"


def test_resolve_path_is_taken_as_is(tmp_path, raw_dataset):
    root = raw_dataset(n_labelled=1)
    assert resolve_raw_dataset(str(root), tmp_path / "elsewhere") == root.resolve()
    with pytest.raises(InputError, match="does not exist"):
        resolve_raw_dataset(str(tmp_path / "missing" / "Dataset009_X"), tmp_path)


# --------------------------------------------------------------------------- image IO


def test_write_read_round_trip_keeps_oblique_geometry(tmp_path, oblique):
    rng = np.random.default_rng(0)
    array = rng.normal(size=(5, 7, 9)).astype(np.float32)
    geo = Geometry((0.7, 0.8, 3.3), (10.0, -20.5, 33.25), oblique(25.0, axis=0), (9, 7, 5))
    write_array(tmp_path / "x.nii.gz", array, geo)
    back, geo2 = read_array(tmp_path / "x.nii.gz")
    np.testing.assert_array_equal(back, array)
    assert geo2.differences(geo) == []
    assert read_header(tmp_path / "x.nii.gz").differences(geo) == []
    assert geo2.array_spacing == pytest.approx((3.3, 0.8, 0.7))
    image = sitk.ReadImage(str(tmp_path / "x.nii.gz"))
    np.testing.assert_allclose(image.GetDirection(), geo.direction, atol=1e-6)
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_2d_image_is_one_slice(tmp_path):
    image = sitk.GetImageFromArray(np.arange(12, dtype=np.float32).reshape(3, 4))
    image.SetSpacing((0.5, 0.6))
    sitk.WriteImage(image, str(tmp_path / "a.nii.gz"))
    array, geo = read_array(tmp_path / "a.nii.gz")
    assert array.shape == (1, 3, 4)
    assert geo.array_spacing == pytest.approx((999.0, 0.6, 0.5))
    write_array(tmp_path / "b.nii.gz", array, geo)
    assert sitk.ReadImage(str(tmp_path / "b.nii.gz")).GetDimension() == 2


def test_geometry_differences_names_each_field():
    eye = tuple(np.eye(3).ravel())
    base = Geometry((1.0, 1.0, 3.0), (0.0, 0.0, 0.0), eye, (8, 8, 4))
    assert base.differences(base) == []
    cases = {
        "size": Geometry((1.0, 1.0, 3.0), (0.0, 0.0, 0.0), eye, (8, 8, 5)),
        "spacing": Geometry((1.0, 1.1, 3.0), (0.0, 0.0, 0.0), eye, (8, 8, 4)),
        "origin": Geometry((1.0, 1.0, 3.0), (0.0, 0.5, 0.0), eye, (8, 8, 4)),
        "direction": Geometry((1.0, 1.0, 3.0), (0.0, 0.0, 0.0),
                              (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0), (8, 8, 4)),
    }
    for field, other in cases.items():
        diff = base.differences(other)
        assert len(diff) == 1 and diff[0].startswith(field)
    # rounding noise of a header round trip is tolerated
    noisy = Geometry((1.0 + 1e-7, 1.0, 3.0), (1e-6, 0.0, 0.0), eye, (8, 8, 4))
    assert base.differences(noisy) == []


def test_corrupt_file_is_input_error(tmp_path):
    bad = tmp_path / "bad_0000.nii.gz"
    bad.write_bytes(b"\x00garbage" * 50)
    for fn in (read_array, read_header):
        with pytest.raises(InputError) as err:
            fn(bad)
        assert err.value.path == str(bad)
        assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- per-case checks


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


# --------------------------------------------------------------------------- fingerprint


def _naive_bbox(data):
    idx = np.argwhere(np.any(data != 0, axis=0))
    return tuple((int(lo), int(hi) + 1) for lo, hi in zip(idx.min(0), idx.max(0)))


def test_nonzero_bbox_matches_naive(synthetic_case):
    rng = np.random.default_rng(1)
    for seed in range(5):
        data, _ = synthetic_case((7, 12, 15), 2, (0, 1), seed=seed, border=seed % 3)
        data[:, rng.integers(7), rng.integers(12), rng.integers(15)] = 3.0  # a stray voxel
        assert nonzero_bbox(data) == _naive_bbox(data)
    assert nonzero_bbox(np.zeros((1, 3, 4, 5))) == ((0, 3), (0, 4), (0, 5))


def test_fingerprint_against_naive_statistics(raw_dataset, synthetic_case):
    root = raw_dataset(n_labelled=3, n_unlabeled=2, n_channels=2, shape=(6, 16, 20),
                       spacing=(0.7, 0.8, 3.0), border=2)
    ds = load_raw_dataset(root)
    fp = extract_fingerprint(ds, num_processes=2, progress=False)
    assert [c.source for c in fp.cases] == ["imagesTr"] * 3 + ["imagesUnlabeled"] * 2
    fg, rel = [[], []], []
    for i, case in enumerate(fp.cases):
        data, seg = synthetic_case((6, 16, 20), 2, (0, 1, 2), seed=i, border=2)
        box = _naive_bbox(data)
        assert case.spacing == pytest.approx((3.0, 0.8, 0.7))
        assert case.shape_before_crop == (6, 16, 20)
        assert case.shape_after_crop == tuple(b - a for a, b in box)
        rel.append(np.prod(case.shape_after_crop) / np.prod((6, 16, 20)))
        if case.source == "imagesTr":  # few voxels: every foreground voxel is sampled
            for ch in range(2):
                fg[ch].append(data[ch][seg > 0])
    assert fp.median_relative_size_after_cropping == pytest.approx(np.median(rel))
    for ch, stats in enumerate(fp.intensity_stats):
        v = np.concatenate(fg[ch]).astype(np.float64)
        assert stats.source == "foreground"
        assert stats.mean == pytest.approx(v.mean(), rel=1e-6)
        assert stats.std == pytest.approx(v.std(), rel=1e-5)
        assert (stats.min, stats.max) == pytest.approx((v.min(), v.max()))
        assert stats.percentile_00_5 == pytest.approx(np.percentile(v, 0.5), rel=1e-6)
        assert stats.percentile_99_5 == pytest.approx(np.percentile(v, 99.5), rel=1e-6)
        assert stats.median == pytest.approx(np.median(v), rel=1e-6)
    assert extract_fingerprint(ds, num_processes=1, progress=False) == fp  # deterministic


def test_fingerprint_without_labels_uses_nonzero_voxels(raw_dataset, synthetic_case):
    root = raw_dataset(n_labelled=0, n_unlabeled=3, shape=(6, 12, 12))
    fp = extract_fingerprint(load_raw_dataset(root), num_processes=1, progress=False)
    values = np.concatenate([synthetic_case((6, 12, 12), 1, (0, 1, 2), seed=i)[0][0].ravel()
                             for i in range(3)])
    values = values[values != 0]
    assert fp.intensity_stats[0].source == "nonzero"
    assert fp.intensity_stats[0].mean == pytest.approx(values.mean(), rel=1e-6)
    assert {c.source for c in fp.cases} == {"imagesUnlabeled"}
