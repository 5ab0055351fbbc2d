"""Folders of reference and predicted label maps for the evaluation tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

SPACING_XYZ = (0.8, 1.2, 3.0)


def blob(rng: np.random.Generator, shape, threshold: float = 0.55) -> np.ndarray:
    return ndimage.gaussian_filter(rng.random(shape), 1.5) > np.quantile(
        ndimage.gaussian_filter(rng.random(shape), 1.5), threshold)


def write_label(path: Path, array: np.ndarray, spacing=SPACING_XYZ,
                origin=(10.0, -5.0, 2.0)) -> None:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))


def make_folders(tmp_path: Path, with_dataset_json: bool = True):
    """Three cases (z, y, x) = (6, 16, 14) with labels 1 and 2 and the empty-mask situations."""
    rng = np.random.default_rng(7)
    ref_dir, pred_dir = tmp_path / "ds" / "labelsTr", tmp_path / "pred"
    ref_dir.mkdir(parents=True)
    pred_dir.mkdir()
    if with_dataset_json:
        (tmp_path / "ds" / "dataset.json").write_text(json.dumps(
            {"labels": {"background": 0, "liver": 1, "lesion": 2}}))
    arrays = {}
    for i in range(3):
        ref = np.zeros((6, 16, 14), np.uint8)
        ref[blob(rng, ref.shape, 0.5)] = 1
        ref[1:4, 4:9, 3:7] = 2
        pred = np.where(rng.random(ref.shape) < 0.1, 0, ref).astype(np.uint8)
        pred[2:5, 5:9, 3:8][pred[2:5, 5:9, 3:8] == 0] = 2
        if i == 1:
            pred[pred == 2] = 0  # lesion missed: one empty -> HD95 undefined
        if i == 2:
            ref[ref == 2] = 0
            pred[pred == 2] = 0  # no lesion anywhere: both empty
        write_label(ref_dir / f"case{i}.nii.gz", ref)
        write_label(pred_dir / f"case{i}.nii.gz", pred)
        arrays[f"case{i}.nii.gz"] = (ref, pred)
    return ref_dir, pred_dir, arrays
