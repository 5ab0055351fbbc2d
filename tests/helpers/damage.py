"""Ways to damage a dataset's files (or the tiny dataset's plans), for the bad-input tests."""

from __future__ import annotations

import json
from pathlib import Path

import SimpleITK as sitk

from tests.helpers.datasets import DATASET, write_image


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def rewrite(path: Path, array=None, dtype=None, **geometry) -> None:
    """Rewrite an image with other voxels, type or geometry (default: its own voxels)."""
    if array is None:
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    write_image(path, array if dtype is None else array.astype(dtype), **geometry)


def edit_meta(root: Path, **changes) -> None:
    meta = json.loads((root / "dataset.json").read_text())
    meta.update(changes)
    (root / "dataset.json").write_text(json.dumps(meta))


def edit_plans(home: Path, **changes) -> Path:
    """Hand-edit the 2d configuration of the tiny dataset's ``plans.json`` under ``home``."""
    path = home / "preprocessed" / DATASET / "plans.json"
    plans = json.loads(path.read_text())
    plans["configurations"]["2d"].update(changes)
    path.write_text(json.dumps(plans, indent=2))
    return path
