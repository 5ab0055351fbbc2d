"""Tests for sslunet.planning.fingerprint against naive statistics of the raw files, and its
check of each case's spacing against the dataset's median."""

from __future__ import annotations

import numpy as np
import pytest

from sslunet.dataset.raw import load_raw_dataset
from sslunet.errors import InputError
from sslunet.planning.api import PlanOptions, plan_and_preprocess
from sslunet.planning.fingerprint import extract_fingerprint
from tests.helpers.damage import rewrite
from tests.helpers.oracles import naive_bbox


SHAPE = (4, 12, 12)


def test_fingerprint_against_naive_statistics(raw_dataset, synthetic_case):
    root = raw_dataset(n_labelled=3, n_unlabeled=2, n_channels=2, shape=(6, 16, 20),
                       spacing=(0.7, 0.8, 3.0), border=2)
    ds = load_raw_dataset(root)
    fp = extract_fingerprint(ds, num_processes=2, progress=False)
    assert [c.source for c in fp.cases] == ["imagesTr"] * 3 + ["imagesUnlabeled"] * 2
    fg, rel = [[], []], []
    for i, case in enumerate(fp.cases):
        data, seg = synthetic_case((6, 16, 20), 2, (0, 1, 2), seed=i, border=2)
        box = naive_bbox(data)
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


def test_spacing_far_from_the_others_is_refused_at_verify(raw_dataset):
    root = raw_dataset(n_labelled=3, shape=SHAPE)
    for sub in ("imagesTr/case_002_0000.nii.gz", "labelsTr/case_002.nii.gz"):
        rewrite(root / sub, spacing=(1e-3, 1e-3, 1e-3))  # in range, but 1000x the others
    with pytest.raises(InputError, match="median spacing") as err:
        plan_and_preprocess(root, root.parent / "pre", PlanOptions(
            num_processes=1, progress=False, verify_only=True))
    assert err.value.path.endswith("imagesTr/case_002_0000.nii.gz")
