"""A tiny planned and preprocessed dataset for training tests, built once per test session.

The raw dataset has ``n_labelled`` labelled and ``n_unlabeled`` unlabeled 1-channel cases of
about 8 x 48 x 40 voxels with anisotropic spacing, a non-trivial origin and an oblique
direction, so that exporting predictions in the original geometry is really exercised. Each
case is an ellipsoidal body (intensity > 0) with two blobs of labels 1 and 2.

After planning, ``plans.json`` is shrunk (3 stages of 4/8/16 features, one convolution per
stage, 32-voxel in-plane patches, batch 2): a training iteration then takes milliseconds.

Usage from a test module::

    from _tiny_dataset import DATASET, tiny_home, trained_home, tiny_overrides

    def test_x(tmp_path_factory, tmp_path):
        paths = tiny_home(tmp_path_factory, tmp_path / "home")

Building (0.3 s) and the reference training run (a few seconds) happen once per session and
are then copied, so each test gets its own writable folder.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from sslunet.paths import Paths
from sslunet.plans import ConfigurationPlan, Plans

DATASET = "Dataset042_Tiny"
LABELS = {"background": 0, "left": 1, "right": 2}
SPACING = (0.8, 0.9, 3.0)  # SimpleITK order (x, y, z): thick slices
ORIGIN = (12.5, -30.25, 4.0)
FEATURES = (4, 8, 16)

_CACHE: dict[str, Path] = {}


def oblique_direction(degrees: float = 20.0) -> tuple[float, ...]:
    """Rotation about the z axis as SimpleITK's flat, row-major 3x3 direction."""
    t = np.deg2rad(degrees)
    rot = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])
    return tuple(float(v) for v in rot.ravel())


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


def _write(path: Path, array: np.ndarray, direction: tuple[float, ...]) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)


def write_tiny_raw(raw_root: Path, n_labelled: int = 6, n_unlabeled: int = 2,
                   name: str = DATASET, seed: int = 0) -> Path:
    """Write the raw nnU-Net-format dataset ``raw_root/name``; returns its folder.

    Labelled cases are ``case_000...`` (odd ones 46 voxels tall instead of 48, so cases differ
    in size), unlabeled ones ``unl_000...``.
    """
    ds = Path(raw_root) / name
    direction = oblique_direction()
    cases = [("imagesTr", f"case_{i:03d}") for i in range(n_labelled)]
    cases += [("imagesUnlabeled", f"unl_{i:03d}") for i in range(n_unlabeled)]
    for index, (folder, case) in enumerate(cases):
        image, label = blob_case((8, 48 - 2 * (index % 2), 40), seed * 1000 + index)
        _write(ds / folder / f"{case}_0000.nii.gz", image, direction)
        if folder == "imagesTr":
            _write(ds / "labelsTr" / f"{case}.nii.gz", label, direction)
    meta = {"channel_names": {"0": "T2"}, "labels": LABELS, "numTraining": n_labelled,
            "file_ending": ".nii.gz"}
    (ds / "dataset.json").write_text(json.dumps(meta, indent=2))
    return ds


def shrink_configuration(config: ConfigurationPlan, features: Sequence[int] = FEATURES,
                         max_patch: Sequence[int] | None = None,
                         batch_size: int = 2) -> ConfigurationPlan:
    """Fewer, narrower stages and a smaller patch, keeping the patch divisible by the strides.

    The first ``len(features)`` stages of the planned topology are kept, with one convolution
    per stage; each patch axis is capped (32 in-plane, 4 along z by default) and rounded down
    to a multiple of the remaining total downsampling.
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
        n_conv_per_stage_encoder=(1,) * n, n_conv_per_stage_decoder=(1,) * (n - 1))


def shrink_plans(plans_path: Path, features: Sequence[int] = FEATURES) -> Plans:
    """Rewrite ``plans_path`` with every configuration shrunk (see :func:`shrink_configuration`)."""
    plans = Plans.load(plans_path)
    configs = {k: shrink_configuration(c, features) for k, c in plans.configurations.items()}
    plans = plans.replace(configurations=configs)
    plans.save(plans_path)
    return plans


def build_tiny_home(home: Path, configurations: tuple[str, ...] = ("2d", "3d_fullres"),
                    features: Sequence[int] = FEATURES, **raw_kwargs) -> Paths:
    """Raw dataset, plans (shrunk) and preprocessed data under ``home``; returns its Paths."""
    from sslunet.planning.api import PlanOptions, plan_and_preprocess

    paths = Paths.under(home)
    raw = write_tiny_raw(paths.raw, **raw_kwargs)
    plan_and_preprocess(raw, paths.preprocessed, PlanOptions(
        configurations=configurations, num_processes=1, progress=False))
    shrink_plans(paths.preprocessed / raw.name / "plans.json", features)
    return paths


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
    from sslunet.training.api import FinetuneOptions, finetune

    if "trained" not in _CACHE:
        home = tmp_path_factory.mktemp("tiny_trained") / "home"
        paths = tiny_home(tmp_path_factory, home)
        run_dir = finetune(paths, FinetuneOptions(DATASET, "2d", overrides=tiny_overrides()))
        _CACHE["trained"], _CACHE["trained_run"] = home, run_dir.relative_to(home)
    return _copy(_CACHE["trained"], dst), dst / _CACHE["trained_run"]
