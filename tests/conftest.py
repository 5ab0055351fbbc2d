"""Shared fixtures: tiny synthetic raw datasets in nnU-Net format, and the real-data marker.

Synthetic cases are an ellipsoidal "body" (positive intensities) inside a zero background
border, with blobby labels inside the body: cropping to the nonzero box has something to crop,
z-scoring inside the mask has a mask, and label maps survive resampling well enough for Dice
round-trip checks. Everything is seeded, so a test sees the same voxels on every run.

Conventions: ``shape`` is numpy order (z, y, x); ``spacing``, ``origin`` and ``direction`` are
SimpleITK order (x, y, z), exactly as ``sitk.Image.SetSpacing`` takes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

requires_real_data = pytest.mark.skipif(
    not REAL_DATA.is_dir(), reason=f"real datasets not available at {REAL_DATA}")


def real_dataset(name: str) -> Path:
    """Path of a real dataset under :data:`REAL_DATA`; skips the test when it is absent."""
    path = REAL_DATA / name
    if not (path / "dataset.json").is_file():
        pytest.skip(f"real dataset {name} not available at {path}")
    return path


# --------------------------------------------------------------------------- geometry helpers

def oblique_direction(degrees: float = 30.0, axis: int = 2) -> tuple[float, ...]:
    """A proper rotation by ``degrees`` about sitk axis ``axis``, as a flat 9-tuple."""
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = [a for a in range(3) if a != axis]
    rot = np.eye(3)
    rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
    return tuple(float(v) for v in rot.ravel())


def _ellipsoid(shape, centre, radii) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float64)  # (3, z, y, x)
    return sum(((grid[a] - centre[a]) / max(radii[a], 0.5)) ** 2 for a in range(3)) <= 1.0


def make_case(shape: Sequence[int] = (8, 32, 32), n_channels: int = 1,
              labels: Sequence[int] = (0, 1, 2), seed: int = 0,
              border: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic case.

    Args:
        shape: (z, y, x) voxels.
        n_channels: image channels.
        labels: label values; 0 is background, each other value gets one ellipsoidal blob.
        seed: everything random (blob positions, noise) derives from it.
        border: zero voxels kept on every side of the body (0 = body touches the edges).

    Returns:
        ``(data (C, z, y, x) float32, seg (z, y, x) int16)``; ``data`` is > 0 exactly inside
        the body and 0 outside it.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    centre = np.array([(s - 1) / 2 for s in shape])
    body_r = np.array([max((s - 2 * border) / 2, 0.5) for s in shape])
    body = _ellipsoid(shape, centre, body_r + 0.25)
    inner = [lab for lab in labels if lab != 0]
    seg = np.zeros(shape, np.int16)
    # one blob per label, side by side along the longest axis (x on ties), jittered a little
    long_axis = 2 - int(np.argmax(shape[::-1]))
    step = 2 * body_r[long_axis] / (len(inner) + 1)
    for k, lab in enumerate(inner):
        c = centre + rng.uniform(-0.1, 0.1, 3) * body_r
        c[long_axis] += (k - (len(inner) - 1) / 2) * step
        r = 0.5 * body_r
        r[long_axis] = 0.45 * step
        seg[_ellipsoid(shape, c, r) & body] = lab
    data = np.zeros((n_channels, *shape), np.float32)
    for ch in range(n_channels):
        smooth = 100.0 + 20.0 * ch + 30.0 * seg + rng.normal(0.0, 5.0, shape)
        data[ch] = np.where(body, np.maximum(smooth, 1.0), 0.0)
    return data, seg


def write_image(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                direction: Sequence[float] | None = None) -> Path:
    """Write a (z, y, x) array with SimpleITK (spacing/origin/direction in sitk order)."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    image.SetDirection(tuple(direction) if direction is not None else tuple(np.eye(3).ravel()))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


def write_raw_dataset(
    root: Path, name: str = "Dataset001_Toy", n_labelled: int = 4, n_unlabeled: int = 0,
    n_test: int = 0, n_channels: int = 1, shape: Sequence[int] = (8, 32, 32),
    spacing: Sequence[float] = (1.0, 1.0, 1.0), origin: Sequence[float] = (0.0, 0.0, 0.0),
    direction: Sequence[float] | None = None, labels: Sequence[int] = (0, 1, 2),
    file_ending: str = ".nii.gz", border: int = 1, seed: int = 0,
    image_dtype=np.float32,
) -> Path:
    """Write ``root/name`` as an nnU-Net v2 raw dataset and return its path.

    Case ids are ``case_000`` (labelled, ``imagesTr`` + ``labelsTr``), ``unl_000``
    (``imagesUnlabeled``) and ``ts_000`` (``imagesTs`` + ``labelsTs``). Label maps are written
    as uint8, images as ``image_dtype``.
    """
    ds = Path(root) / name
    ds.mkdir(parents=True, exist_ok=False)
    groups = (("imagesTr", "labelsTr", "case", n_labelled),
              ("imagesUnlabeled", None, "unl", n_unlabeled),
              ("imagesTs", "labelsTs", "ts", n_test))
    geo = dict(spacing=spacing, origin=origin, direction=direction)
    index = 0
    for img_dir, lab_dir, prefix, count in groups:
        for i in range(count):
            data, seg = make_case(shape, n_channels, labels, seed=seed * 1000 + index,
                                  border=border)
            index += 1
            case = f"{prefix}_{i:03d}"
            for ch in range(n_channels):
                write_image(ds / img_dir / f"{case}_{ch:04d}{file_ending}",
                            data[ch].astype(image_dtype), **geo)
            if lab_dir is not None:
                write_image(ds / lab_dir / f"{case}{file_ending}", seg.astype(np.uint8), **geo)
    names = ("background", "left", "right", "top", "bottom", "front", "back")
    meta = {
        "channel_names": {str(c): ("T2", "ADC", "T1", "FLAIR")[c % 4] for c in range(n_channels)},
        "labels": {names[v] if v < len(names) else f"label{v}": int(v) for v in labels},
        "numTraining": n_labelled,
        "file_ending": file_ending,
    }
    (ds / "dataset.json").write_text(json.dumps(meta, indent=2))
    return ds


# --------------------------------------------------------------------------- fixtures

@pytest.fixture
def raw_dataset(tmp_path) -> Callable[..., Path]:
    """Factory: ``raw_dataset(**kwargs)`` writes a dataset under ``tmp_path/raw`` (see
    :func:`write_raw_dataset` for the keywords) and returns its folder."""
    def make(**kwargs) -> Path:
        return write_raw_dataset(tmp_path / "raw", **kwargs)

    return make


@pytest.fixture
def synthetic_case() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """The :func:`make_case` function: ``synthetic_case(shape, n_channels, labels, seed)``."""
    return make_case


@pytest.fixture
def sitk_image_writer() -> Callable[..., Path]:
    """The :func:`write_image` function, for tests that build odd raw files by hand."""
    return write_image


@pytest.fixture
def oblique() -> Callable[..., tuple[float, ...]]:
    """The :func:`oblique_direction` function."""
    return oblique_direction


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module of tiny-tensor tests: extra OpenMP threads only add
    contention on a busy 2-core runner (several x slower). Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

