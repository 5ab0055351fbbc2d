"""The one builder of small synthetic datasets for the tests.

Every test dataset is written by :func:`write_raw_dataset` (an nnU-Net v2 raw dataset) and,
where a test needs it planned, planned and preprocessed by :func:`plan_dataset`, which can also
shrink the plans to a tiny network (:func:`shrink_configuration`). What differs between datasets
is only the keywords: the anatomy of a case (``case=``), its geometry, counts and names.

Anatomies (each seeded, so a test sees the same voxels on every run):

- :func:`make_case` (the default): an ellipsoidal "body" (positive intensities) inside a zero
  background border, with one blob per label inside it: cropping to the nonzero box has
  something to crop, z-scoring inside the mask has a mask, and label maps survive resampling.
- :func:`blob_case`: the tiny training dataset's cases (a body with blobs 1 "left", 2 "right").
- :func:`stack_case`: a disc growing along the slice axis with a bright core (label 1), so that
  slices of the same partition look alike across volumes, as Chaitanya et al.'s G^D assumes.

Ready-made datasets, built once per test session and then copied, so that each test gets its
own writable folder:

- :func:`tiny_home` / :func:`trained_home`: ``Dataset042_Tiny``, 6 labelled + 2 unlabeled
  cases of about 8 x 48 x 40 voxels with anisotropic spacing, a non-trivial origin and an
  oblique direction (so exporting predictions in the original geometry is really exercised),
  planned for 2d and 3d_fullres and shrunk to 3 stages of 4/8/16 features, one convolution per
  stage, 32-voxel in-plane patches, batch 2: a training iteration takes milliseconds.
  :func:`trained_home` adds one finished 2d fold-0 run (with its final validation).
- :func:`stack_home`: ``Dataset901_Stack``, 4 labelled + 4 unlabeled stacks of 12 x 24 x 24
  voxels for the pretraining objectives, shrunk the same way with 24-voxel patches, batch 8.

Conventions: ``shape`` is numpy order (z, y, x); ``spacing``, ``origin`` and ``direction`` are
SimpleITK order (x, y, z), exactly as ``sitk.Image.SetSpacing`` takes them.

Usage from a test module::

    from tests.helpers.datasets import DATASET, tiny_home, trained_home, tiny_overrides

    def test_x(tmp_path_factory, tmp_path):
        paths = tiny_home(tmp_path_factory, tmp_path / "home")
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import SimpleITK as sitk

from sslunet.paths import Paths
from sslunet.planning.api import PlanOptions, plan_and_preprocess
from sslunet.plans import ConfigurationPlan, Plans
from sslunet.training.api import FinetuneOptions, finetune

DATASET = "Dataset042_Tiny"
SPACING = (0.8, 0.9, 3.0)  # the tiny dataset's SimpleITK spacing (x, y, z): thick slices
ORIGIN = (12.5, -30.25, 4.0)
FEATURES = (4, 8, 16)

STACK = "Dataset901_Stack"
STACK_SHAPE = (12, 24, 24)  # z, y, x
STACK_PATCHES = {"2d": (24, 24), "3d_fullres": (4, 24, 24)}

LABEL_NAMES = ("background", "left", "right", "top", "bottom", "front", "back")
CHANNEL_NAMES = ("T2", "ADC", "T1", "FLAIR")

_CACHE: dict[str, Path] = {}

# a case generator: running index of the case over all groups -> (data (C, z, y, x), seg (z, y, x))
CaseFn = Callable[[int], tuple[np.ndarray, np.ndarray]]


# --------------------------------------------------------------------------- geometry

def oblique_direction(degrees: float = 30.0, axis: int = 2) -> tuple[float, ...]:
    """A proper rotation by ``degrees`` about sitk axis ``axis``, as a flat 9-tuple."""
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = [a for a in range(3) if a != axis]
    rot = np.eye(3)
    rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
    return tuple(float(v) for v in rot.ravel())


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


# --------------------------------------------------------------------------- anatomies

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


def blob_case(shape: Sequence[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(image (z, y, x) float32, label (z, y, x) uint8)``: a body with blobs 1 (left), 2."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape, dtype=np.float64)  # three (z, y, x) grids
    nz, ny, nx = shape
    body = (((z - (nz - 1) / 2) / (nz / 2)) ** 2 + ((y - (ny - 1) / 2) / (ny / 2 - 1)) ** 2
            + ((x - (nx - 1) / 2) / (nx / 2 - 1)) ** 2) <= 1.0
    label = np.zeros(shape, np.uint8)
    for value, cx in ((1, 0.32 * nx), (2, 0.68 * nx)):
        cy = ny / 2 + rng.uniform(-3, 3)
        r = np.array([nz / 2.5, ny / 5, nx / 7]) * rng.uniform(0.9, 1.1)
        blob = ((z - nz / 2) / r[0]) ** 2 + ((y - cy) / r[1]) ** 2 + ((x - cx) / r[2]) ** 2 <= 1
        label[blob & body] = value
    image = 100.0 + 40.0 * label + rng.normal(0.0, 5.0, shape)
    return np.where(body, np.maximum(image, 1.0), 0.0).astype(np.float32), label


def stack_case(rng: np.random.Generator,
               shape: Sequence[int] = STACK_SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """A (z, y, x) stack: a disc whose radius grows along z, a bright core labelled 1."""
    z, y, x = np.indices(shape, dtype=np.float64)
    cy, cx = (np.array(shape[1:]) - 1) / 2 + rng.uniform(-1.5, 1.5, 2)
    r2 = (y - cy) ** 2 + (x - cx) ** 2
    radius = 3.0 + 8.0 * z / (shape[0] - 1)
    disc, core = r2 <= radius**2, r2 <= (0.45 * radius) ** 2
    image = 20 + 60 * disc + 40 * core + (10 * z / shape[0]) * disc + rng.normal(0, 4, shape)
    return image.astype(np.float32), core.astype(np.uint8)


# --------------------------------------------------------------------------- raw datasets

def write_raw_dataset(
    root: Path, name: str = "Dataset001_Toy", n_labelled: int = 4, n_unlabeled: int = 0,
    n_test: int = 0, n_channels: int = 1, shape: Sequence[int] = (8, 32, 32),
    spacing: Sequence[float] = (1.0, 1.0, 1.0), origin: Sequence[float] = (0.0, 0.0, 0.0),
    direction: Sequence[float] | None = None,
    labels: Sequence[int] | Mapping[str, int] = (0, 1, 2),
    file_ending: str = ".nii.gz", border: int = 1, seed: int = 0,
    image_dtype=np.float32, case: CaseFn | None = None,
    geometry: Callable[[int], dict] | None = None,
) -> Path:
    """Write ``root/name`` as an nnU-Net v2 raw dataset and return its path.

    Case ids are ``case_000`` (labelled, ``imagesTr`` + ``labelsTr``), ``unl_000``
    (``imagesUnlabeled``) and ``ts_000`` (``imagesTs`` + ``labelsTs``), in this order; a running
    ``index`` counts the cases over the three groups. Each case is ``case(index)`` (default:
    :func:`make_case` with ``shape``, ``n_channels``, the label values, seed
    ``seed * 1000 + index`` and ``border``) and is written with ``geometry(index)`` (default:
    ``spacing``, ``origin`` and ``direction`` for every case). Label maps are written as uint8,
    images as ``image_dtype``. ``labels`` are values (named background, left, right, ...) or a
    ``{name: value}`` mapping.
    """
    ds = Path(root) / name
    ds.mkdir(parents=True, exist_ok=False)
    if isinstance(labels, Mapping):
        label_map = {str(k): int(v) for k, v in labels.items()}
    else:
        label_map = {LABEL_NAMES[v] if v < len(LABEL_NAMES) else f"label{v}": int(v)
                     for v in labels}
    values = tuple(label_map.values())
    if case is None:
        def case(index: int) -> tuple[np.ndarray, np.ndarray]:
            return make_case(shape, n_channels, values, seed=seed * 1000 + index, border=border)
    if geometry is None:
        def geometry(index: int) -> dict:
            return dict(spacing=spacing, origin=origin, direction=direction)
    groups = (("imagesTr", "labelsTr", "case", n_labelled),
              ("imagesUnlabeled", None, "unl", n_unlabeled),
              ("imagesTs", "labelsTs", "ts", n_test))
    index = 0
    for img_dir, lab_dir, prefix, count in groups:
        for i in range(count):
            data, seg = case(index)
            geo = geometry(index)
            index += 1
            case_id = f"{prefix}_{i:03d}"
            for ch in range(len(data)):
                write_image(ds / img_dir / f"{case_id}_{ch:04d}{file_ending}",
                            data[ch].astype(image_dtype), **geo)
            if lab_dir is not None:
                write_image(ds / lab_dir / f"{case_id}{file_ending}", seg.astype(np.uint8),
                            **geo)
    meta = {
        "channel_names": {str(c): CHANNEL_NAMES[c % 4] for c in range(n_channels)},
        "labels": label_map,
        "numTraining": n_labelled,
        "file_ending": file_ending,
    }
    (ds / "dataset.json").write_text(json.dumps(meta, indent=2))
    return ds


# --------------------------------------------------------------------------- planning

def shrink_configuration(config: ConfigurationPlan, features: Sequence[int] = FEATURES,
                         max_patch: Sequence[int] | None = None,
                         batch_size: int = 2,
                         n_conv_encoder: Sequence[int] | None = None) -> ConfigurationPlan:
    """Fewer, narrower stages and a smaller patch, keeping the patch divisible by the strides.

    The first ``len(features)`` stages of the planned topology are kept, with one convolution
    per stage (``n_conv_encoder``: per encoder stage instead, e.g. residual blocks); each patch
    axis is capped (32 in-plane, 4 along z by default) and rounded down to a multiple of the
    remaining total downsampling. The planned network is kept.
    """
    n = len(features)
    pools = tuple(config.pool_op_kernel_sizes[:n])
    cap = tuple(max_patch) if max_patch is not None else ((32, 32) if config.ndim == 2
                                                          else (4, 32, 32))
    down = [int(np.prod([p[a] for p in pools])) for a in range(config.ndim)]
    patch = tuple(max(d, min(p, c) // d * d) for p, c, d in zip(config.patch_size, cap, down))
    return dataclasses.replace(
        config, patch_size=patch, batch_size=batch_size, features_per_stage=tuple(features),
        pool_op_kernel_sizes=pools, conv_kernel_sizes=tuple(config.conv_kernel_sizes[:n]),
        n_conv_per_stage_encoder=tuple(n_conv_encoder or (1,) * n),
        n_conv_per_stage_decoder=(1,) * (n - 1))


def plan_dataset(raw: Path, paths: Paths, configurations: Sequence[str] = ("2d", "3d_fullres"),
                 preprocess: bool = True, shrink: dict | None = None,
                 preset: str = "plain") -> Plans:
    """Plan (and preprocess) ``raw`` into ``paths.preprocessed`` with the real planner
    (``preset``: a planner preset, e.g. ``resenc_m``).

    With ``shrink`` (keywords ``features``, ``batch_size``, ``n_conv_encoder`` and
    ``max_patch``, a ``{configuration: patch cap}`` mapping), every configuration is shrunk with
    :func:`shrink_configuration` and ``plans.json`` is rewritten. Returns the plans.
    """
    plans = plan_and_preprocess(raw, paths.preprocessed, PlanOptions(
        configurations=tuple(configurations), num_processes=1, progress=False,
        preprocess=preprocess, preset=preset))
    if shrink is not None:
        caps = shrink.get("max_patch") or {}
        kwargs = {k: v for k, v in shrink.items() if k != "max_patch"}
        plans = plans.replace(configurations={
            k: shrink_configuration(c, max_patch=caps.get(k), **kwargs)
            for k, c in plans.configurations.items()})
        plans.save(paths.preprocessed / raw.name / "plans.json")
    return plans


# --------------------------------------------------------------------------- ready-made homes

def write_tiny_raw(raw_root: Path, n_labelled: int = 6, n_unlabeled: int = 2,
                   name: str = DATASET, seed: int = 0) -> Path:
    """Write the tiny raw dataset ``raw_root/name``; returns its folder.

    Labelled cases are ``case_000...`` (odd ones 46 voxels tall instead of 48, so cases differ
    in size), unlabeled ones ``unl_000...``.
    """
    def case(index: int) -> tuple[np.ndarray, np.ndarray]:
        image, label = blob_case((8, 48 - 2 * (index % 2), 40), seed * 1000 + index)
        return image[None], label

    return write_raw_dataset(raw_root, name, n_labelled, n_unlabeled, spacing=SPACING,
                             origin=ORIGIN, direction=oblique_direction(20.0), case=case)


def build_tiny_home(home: Path, configurations: tuple[str, ...] = ("2d", "3d_fullres"),
                    features: Sequence[int] = FEATURES, **raw_kwargs) -> Paths:
    """Raw dataset, plans (shrunk) and preprocessed data under ``home``; returns its Paths."""
    paths = Paths.under(home)
    raw = write_tiny_raw(paths.raw, **raw_kwargs)
    plan_dataset(raw, paths, configurations, shrink=dict(features=features))
    return paths


def build_stack_home(home: Path, n_labelled: int = 4, n_unlabeled: int = 4,
                     name: str = STACK, preset: str = "plain",
                     n_conv_encoder: Sequence[int] | None = None) -> tuple[Paths, Plans]:
    """Write, plan (with planner ``preset``) and preprocess the stack dataset under ``home``;
    shrink its plans (``n_conv_encoder``: convs or residual blocks per encoder stage, default
    one each)."""
    rng = np.random.default_rng(0)

    def case(index: int) -> tuple[np.ndarray, np.ndarray]:
        image, label = stack_case(rng)
        return image[None], label

    paths = Paths.under(home)
    raw = write_raw_dataset(paths.raw, name, n_labelled, n_unlabeled,
                            spacing=(1.0, 1.0, 3.0), labels={"background": 0, "core": 1},
                            case=case)
    plans = plan_dataset(raw, paths, tuple(STACK_PATCHES), preset=preset, shrink=dict(
        features=FEATURES, batch_size=8, max_patch=STACK_PATCHES, n_conv_encoder=n_conv_encoder))
    return paths, plans


def tiny_overrides(**changes) -> dict:
    """TrainingConfig overrides for a run of seconds: 2 epochs x 2 iterations, no workers."""
    return {"epochs": 2, "iters_per_epoch": 2, "val_iters": 1, "batch_size": 2,
            "num_workers": 0, **changes}


def _copy(src: Path, dst: Path) -> Paths:
    shutil.copytree(src, dst)
    return Paths.under(dst)


def tiny_home(tmp_path_factory, dst: Path) -> Paths:
    """A private copy (at ``dst``) of the session's planned tiny dataset."""
    if "planned" not in _CACHE:
        home = tmp_path_factory.mktemp("tiny_planned") / "home"
        build_tiny_home(home)
        _CACHE["planned"] = home
    return _copy(_CACHE["planned"], dst)


def trained_home(tmp_path_factory, dst: Path) -> tuple[Paths, Path]:
    """A private copy of the planned dataset plus one finished 2d fold-0 run (with the final
    sliding-window validation); returns ``(paths, run folder)``."""
    if "trained" not in _CACHE:
        home = tmp_path_factory.mktemp("tiny_trained") / "home"
        paths = tiny_home(tmp_path_factory, home)
        run_dir = finetune(paths, FinetuneOptions(DATASET, "2d", overrides=tiny_overrides()))
        _CACHE["trained"], _CACHE["trained_run"] = home, run_dir.relative_to(home)
    return _copy(_CACHE["trained"], dst), dst / _CACHE["trained_run"]


def stack_home(tmp_path_factory, dst: Path) -> tuple[Paths, Plans]:
    """A private copy (at ``dst``) of the session's planned stack dataset, and its plans."""
    if "stack" not in _CACHE:
        home = tmp_path_factory.mktemp("stack_planned") / "home"
        build_stack_home(home)
        _CACHE["stack"] = home
    paths = _copy(_CACHE["stack"], dst)
    return paths, Plans.load(paths.preprocessed / STACK / "plans.json")
