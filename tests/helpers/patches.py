"""Preprocessed cases for the patch-sampling and batch-loading tests (fixture ``cases``), and a
patch loader over them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sslunet.data import PatchDataLoader
from sslunet.preprocessing.storage import CaseProperties, save_case


def write_patch_case(folder, case_id, shape, rng, center, radius, channels=1, labeled=True):
    """Random image + ball of label 1 (and a one-voxel label 2) + a -1 corner (outside mask)."""
    data = rng.normal(size=(channels, *shape)).astype(np.float32)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    dist2 = (zz - center[0]) ** 2 + (yy - center[1]) ** 2 + (xx - center[2]) ** 2
    seg = np.zeros((1, *shape), dtype=np.int8)
    seg[0][dist2 <= radius**2] = 1
    seg[0, center[0], center[1], center[2]] = 2
    seg[0, :, :2, :2] = -1
    locations = {}
    if labeled:
        for label in (1, 2):
            locations[str(label)] = np.argwhere(seg[0] == label)[:50].tolist()
    props = CaseProperties(
        case_id=case_id,
        source="imagesTr" if labeled else "imagesUnlabeled",
        sitk_spacing=(1.0, 1.0, 1.0),
        sitk_origin=(0.0, 0.0, 0.0),
        sitk_direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        original_shape=tuple(shape),
        bbox=tuple((0, s) for s in shape),
        shape_after_crop=tuple(shape),
        spacing=(1.0, 1.0, 1.0),
        target_spacing=(1.0, 1.0, 1.0),
        shape_after_resample=tuple(shape),
        has_seg=labeled,
        class_locations=locations,
    )
    save_case(folder, data, seg if labeled else None, props)
    return data, seg


def write_patch_cases(folder: Path) -> Path:
    """Three labelled cases of different size (one smaller than the patches) + one unlabeled,
    ``a``, ``b``, ``c`` (2 channels each) and ``u``; returns ``folder``."""
    rng = np.random.default_rng(0)
    write_patch_case(folder, "a", (20, 64, 64), rng, (10, 40, 20), 2, channels=2)
    write_patch_case(folder, "b", (24, 56, 60), rng, (3, 50, 55), 2, channels=2)
    write_patch_case(folder, "c", (5, 20, 24), rng, (2, 10, 12), 3, channels=2)
    write_patch_case(folder, "u", (12, 40, 40), rng, (6, 20, 20), 3, channels=2, labeled=False)
    return folder


def patch_loader(folder, case_ids=("a", "b", "c"), patch=(8, 32, 32), **kw):
    kw.setdefault("batch_size", 4)
    return PatchDataLoader(folder, list(case_ids), patch, ndim=len(patch), **kw)
