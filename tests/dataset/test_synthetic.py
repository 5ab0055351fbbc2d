"""Tests for sslunet.dataset.synthetic, the synthetic abdominal MR generator: determinism,
anatomy, contrasts, layout."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.ndimage import binary_erosion

from sslunet.dataset.raw import load_raw_dataset
from sslunet.dataset.phantom import LABELS, Tissue
from sslunet.dataset.synthetic import (SynthConfig, generate_case, generate_dataset,
                                       synthesize_case)
from sslunet.errors import InputError
from sslunet.utils.serialization import from_dict


SMALL = SynthConfig(num_labeled=2, num_unlabeled=1, num_test=1, seed=3)


# many flipped / oblique cases so that every check also covers the non-identity directions
MIXED = SynthConfig(flipped_fraction=0.5, oblique_fraction=0.5)


@pytest.fixture(scope="module")
def cases():
    return [synthesize_case(np.random.default_rng([0, i]), MIXED) for i in range(6)]


def _array(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_same_seed_same_case_different_seed_different_case():
    a_img, a_lab = generate_case(np.random.default_rng([7, 1]), MIXED)
    b_img, b_lab = generate_case(np.random.default_rng([7, 1]), MIXED)
    c_img, _ = generate_case(np.random.default_rng([8, 1]), MIXED)
    assert np.array_equal(sitk.GetArrayFromImage(a_img), sitk.GetArrayFromImage(b_img))
    assert np.array_equal(sitk.GetArrayFromImage(a_lab), sitk.GetArrayFromImage(b_lab))
    assert a_img.GetSpacing() == b_img.GetSpacing() and a_img.GetOrigin() == b_img.GetOrigin()
    a = sitk.GetArrayFromImage(a_img)
    c = sitk.GetArrayFromImage(c_img)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_image_and_label_share_geometry_and_spacing_is_anisotropic():
    cfg = SynthConfig()
    for i in range(4):
        image, label = generate_case(np.random.default_rng([1, i]), MIXED)
        assert image.GetPixelID() == sitk.sitkFloat32 and label.GetPixelID() == sitk.sitkUInt8
        assert image.GetSize() == label.GetSize()
        assert image.GetSpacing() == label.GetSpacing()
        assert image.GetOrigin() == label.GetOrigin()
        assert image.GetDirection() == label.GetDirection()
        d = np.array(image.GetDirection()).reshape(3, 3)  # rows of the direction matrix
        np.testing.assert_allclose(d @ d.T, np.eye(3), atol=1e-9)
        sx, sy, sz = image.GetSpacing()
        nx, ny, nz = image.GetSize()
        assert sx == sy and cfg.inplane_spacing_mm[0] <= sx <= cfg.inplane_spacing_mm[1]
        assert cfg.slice_spacing_mm[0] <= sz <= cfg.slice_spacing_mm[1] and sz > 1.4 * sx
        assert 80 <= nx <= 128 and 80 <= ny <= 128 and 20 <= nz <= 36


def test_labels_and_organ_volumes_are_plausible(cases):
    for case in cases:
        assert case.label.dtype == np.uint8 and case.label.shape == case.image.shape
        assert set(np.unique(case.label).tolist()) <= set(LABELS.values())
        ml = np.prod(case.spacing) / 1000.0
        liver, spleen, kidney = ((case.label == v).sum() * ml for v in (1, 2, 3))
        assert 800 <= liver <= 3000
        assert 30 <= spleen <= 600
        assert 60 <= kidney <= 600  # both kidneys, possibly cut by the field of view


def test_liver_lies_on_the_patient_right(cases):
    """In LPS physical space patient right is -x, whatever the stored direction."""
    for case in cases:
        image = sitk.GetImageFromArray(case.label)
        image.SetSpacing(case.spacing)
        image.SetOrigin(case.origin)
        image.SetDirection(case.direction)

        def centroid_x(mask):
            zyx = np.argwhere(mask).mean(0)
            return image.TransformContinuousIndexToPhysicalPoint(zyx[::-1].tolist())[0]

        body_x = centroid_x(case.tissue != Tissue.AIR)
        assert centroid_x(case.label == 1) < body_x - 20
        assert centroid_x(case.label == 2) > body_x + 20  # spleen on the left


def test_t2_contrasts(cases):
    for case in cases:
        mean = {t.name: case.image[case.tissue == t].mean() for t in Tissue
                if (case.tissue == t).any()}
        assert mean["SUBCUT_FAT"] > 2 * mean["LIVER"]
        assert mean["SPLEEN"] > 1.2 * mean["LIVER"]
        assert mean["KIDNEY_CORTEX"] > mean["LIVER"] > mean["MUSCLE"]


def test_background_is_a_small_nonzero_noise_floor(cases):
    for case in cases:
        # away from the body, where the point-spread function leaks no signal
        far = binary_erosion(case.tissue == Tissue.AIR, np.ones((1, 5, 5), bool))
        air = case.image[far]
        assert air.size > 1000
        fat = case.image[case.tissue == Tissue.SUBCUT_FAT].mean()
        assert 0 < air.mean() < 0.1 * fat
        assert air.min() >= 0 and (air > 0).mean() > 0.99 and air.std() > 0
        # Rician noise on a zero signal is Rayleigh: mean / std = sqrt(pi / (4 - pi)) ~ 1.91
        assert 1.6 < air.mean() / air.std() < 2.3


def test_dataset_layout_and_dataset_json(tmp_path):
    folder = generate_dataset(tmp_path, SMALL, num_processes=1)
    assert folder == tmp_path / "Dataset001_Liver"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset001_Liver"]  # no temp left
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert files == {"dataset.json", "imagesTr/liver_000_0000.nii.gz",
                     "imagesTr/liver_001_0000.nii.gz", "labelsTr/liver_000.nii.gz",
                     "labelsTr/liver_001.nii.gz", "imagesUnlabeled/liver_002_0000.nii.gz",
                     "imagesTs/liver_003_0000.nii.gz", "labelsTs/liver_003.nii.gz"}
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "T2"}
    assert meta["labels"] == {"background": 0, "liver": 1, "spleen": 2, "kidney": 3}
    assert meta["file_ending"] == ".nii.gz" and meta["name"] == "Dataset001_Liver"
    assert (meta["numTraining"], meta["numUnlabeled"], meta["numTest"]) == (2, 1, 1)
    assert from_dict(SynthConfig, meta["generator"]) == SMALL
    dataset = load_raw_dataset(folder)  # the project's own reader accepts it
    assert len(dataset.cases) == 4
    # the written case is exactly generate_case with the (seed, index) generator
    image, label = generate_case(np.random.default_rng([SMALL.seed, 3]), SMALL)
    assert np.array_equal(_array(folder / "imagesTs/liver_003_0000.nii.gz"),
                          sitk.GetArrayFromImage(image))
    assert np.array_equal(_array(folder / "labelsTs/liver_003.nii.gz"),
                          sitk.GetArrayFromImage(label))


def test_parallel_output_is_identical_and_independent_of_other_counts(tmp_path):
    serial = generate_dataset(tmp_path / "a", SMALL, num_processes=1)
    fewer = dataclasses.replace(SMALL, num_test=0)
    parallel = generate_dataset(tmp_path / "b", fewer, num_processes=2)
    names = sorted(p.relative_to(parallel) for p in parallel.rglob("*.nii.gz"))
    assert len(names) == 5 and not (parallel / "imagesTs").exists()
    for name in names:
        assert np.array_equal(_array(serial / name), _array(parallel / name)), name


@pytest.mark.parametrize("change", [{"num_labeled": -1}, {"num_labeled": 0, "num_unlabeled": 0},
                                   {"dataset_name": "bad/name"}, {"dataset_id": 1000},
                                   {"slice_spacing_mm": (8.0, 5.0)}])
def test_invalid_config_is_an_input_error(tmp_path, change):
    with pytest.raises(InputError):
        generate_dataset(tmp_path, dataclasses.replace(SMALL, **change))
    assert not any(tmp_path.iterdir())
