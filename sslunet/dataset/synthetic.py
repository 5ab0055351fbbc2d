"""Synthetic abdominal T2-weighted MR phantoms, written as an nnU-Net v2 raw dataset.

This module holds what to generate (:class:`SynthConfig`) and how cases become a dataset
folder (file layout, ``dataset.json``, atomic writing, worker processes). The anatomy and image
formation of a single case live in :mod:`sslunet.dataset.phantom`; its public names
(``LABELS``, ``Tissue``, ``TISSUE_TO_LABEL``, ``SynthCase``) are re-exported here.

Images are float32 in arbitrary scanner units (a random global scale per case, as on real
scanners); labels are uint8: 0 background, 1 liver, 2 spleen, 3 kidney. A case's content
depends only on ``(seed, case index)``, never on the other counts or on the process count.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sslunet.dataset.phantom import LABELS, SynthCase, draw_phantom
from sslunet.errors import InputError
from sslunet.utils.atomic import atomic_path, write_json
from sslunet.utils.parallel import parallel_map
from sslunet.utils.serialization import to_dict

CASE_PREFIX = "liver"
U = tuple[float, float]  # a (low, high) range sampled uniformly per case


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Ranges are ``(low, high)`` and sampled uniformly once per case.

    ``noise_sigma`` is the Gaussian noise std of each complex channel relative to the
    subcutaneous fat signal; ``bias_amplitude`` is the largest |log| of the multiplicative bias
    field (0.3 gives about 0.74-1.35). ``flipped_fraction`` of cases are stored with the x and
    y axes reversed (direction diag(-1, -1, 1)), ``oblique_fraction`` with a direction rotated
    about z by up to ``oblique_max_deg``; image and label always share one geometry.
    """

    num_labeled: int = 20
    num_unlabeled: int = 40
    num_test: int = 10
    seed: int = 0
    dataset_id: int = 1
    dataset_name: str = "Liver"
    inplane_spacing_mm: U = (2.5, 3.5)
    slice_spacing_mm: U = (5.0, 8.0)
    inplane_size: tuple[int, int] = (80, 128)
    num_slices: tuple[int, int] = (20, 36)
    min_craniocaudal_mm: float = 160.0
    noise_sigma: U = (0.015, 0.04)
    bias_amplitude: U = (0.15, 0.3)
    intensity_scale: U = (400.0, 1500.0)
    flipped_fraction: float = 0.1
    oblique_fraction: float = 0.05
    oblique_max_deg: float = 15.0

    @property
    def folder_name(self) -> str:
        return f"Dataset{self.dataset_id:03d}_{self.dataset_name}"


def synthesize_case(rng: np.random.Generator, config: SynthConfig = SynthConfig()) -> SynthCase:
    """Draw one phantom (:func:`sslunet.dataset.phantom.draw_phantom`) from ``rng``.

    Args:
        rng: the case's generator (``generate_dataset`` uses ``default_rng([seed, index])``).
        config: ranges for spacing, size, noise, bias and orientation.

    Returns:
        SynthCase with (z, y, x) arrays and SimpleITK-ordered geometry.
    """
    return draw_phantom(rng, config)


def generate_case(rng: np.random.Generator, config: SynthConfig = SynthConfig()
                  ) -> tuple[sitk.Image, sitk.Image]:
    """One phantom as SimpleITK images: (image float32, label uint8) with identical geometry."""
    case = synthesize_case(rng, config)
    image = sitk.GetImageFromArray(case.image)
    image.SetSpacing(case.spacing)
    image.SetOrigin(case.origin)
    image.SetDirection(case.direction)
    label = sitk.GetImageFromArray(case.label)
    label.CopyInformation(image)
    return image, label


# ----------------------------------------------------------------------------------- dataset
SOURCE_LABELS = {"imagesTr": "labelsTr", "imagesUnlabeled": None, "imagesTs": "labelsTs"}


def validate_config(config: SynthConfig) -> None:
    """Raise InputError for counts, names or ranges that cannot produce a dataset."""
    counts = (config.num_labeled, config.num_unlabeled, config.num_test)
    if min(counts) < 0 or config.num_labeled + config.num_unlabeled < 1:
        raise InputError(f"case counts must be >= 0 with at least one training or unlabelled "
                         f"case, got labeled/unlabeled/test = {counts}")
    if not 1 <= config.dataset_id <= 999:
        raise InputError(f"dataset id must be in 1..999, got {config.dataset_id}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", config.dataset_name):
        raise InputError(f"dataset name must be letters, digits, '_' or '-', got "
                         f"{config.dataset_name!r}")
    for name in ("inplane_spacing_mm", "slice_spacing_mm", "inplane_size", "num_slices",
                 "noise_sigma", "bias_amplitude", "intensity_scale"):
        lo, hi = getattr(config, name)
        if not 0 <= lo <= hi or (name != "bias_amplitude" and lo == 0):
            raise InputError(f"{name} must be a range 0 < low <= high, got {(lo, hi)}")
    if min(config.inplane_size + config.num_slices) < 8:
        raise InputError("image sizes below 8 voxels per axis are not supported")
    if not (0 <= config.flipped_fraction <= 1 and 0 <= config.oblique_fraction <= 1):
        raise InputError("flipped_fraction and oblique_fraction must lie in [0, 1]")


def case_plan(config: SynthConfig) -> list[tuple[str, int]]:
    """(source folder, case index) of every case: labelled first, then unlabelled, then test.

    The index names the case (``liver_{index:03d}``) and seeds it, so a case's content depends
    only on ``(seed, index)``.
    """
    n_tr, n_un = config.num_labeled, config.num_unlabeled
    return ([("imagesTr", i) for i in range(n_tr)]
            + [("imagesUnlabeled", n_tr + i) for i in range(n_un)]
            + [("imagesTs", n_tr + n_un + i) for i in range(config.num_test)])


def _write(image: sitk.Image, path: Path) -> None:
    with atomic_path(path, suffix=".nii.gz") as tmp:
        sitk.WriteImage(image, str(tmp), True)


def _write_case(job: tuple[Path, str, int, SynthConfig]) -> str:
    """Generate and write one case (top-level so that worker processes can run it)."""
    folder, source, index, config = job
    image, label = generate_case(np.random.default_rng([config.seed, index]), config)
    case = f"{CASE_PREFIX}_{index:03d}"
    _write(image, folder / source / f"{case}_0000.nii.gz")
    if SOURCE_LABELS[source]:
        _write(label, folder / SOURCE_LABELS[source] / f"{case}.nii.gz")
    return case


def dataset_json(config: SynthConfig) -> dict:
    """The ``dataset.json`` of a synthetic dataset (nnU-Net v2 keys plus our extensions)."""
    return {
        "name": config.folder_name,
        "description": "Synthetic abdominal T2-weighted MR phantoms (sslunet.dataset.synthetic):"
                       " liver, spleen and kidneys labelled; imagesUnlabeled/ holds unlabelled"
                       " cases for self-supervision, imagesTs/ and labelsTs/ held-out test cases"
                       " with references.",
        "channel_names": {"0": "T2"},
        "labels": dict(LABELS),
        "numTraining": config.num_labeled,
        "numUnlabeled": config.num_unlabeled,
        "numTest": config.num_test,
        "file_ending": ".nii.gz",
        "generator": to_dict(config),
    }


def generate_dataset(out_root: str | Path, config: SynthConfig = SynthConfig(),
                     overwrite: bool = False, num_processes: int = 1,
                     progress: bool = False) -> Path:
    """Write a synthetic dataset as ``out_root/Dataset{id:03d}_{name}/``.

    Everything is written into a hidden temporary sibling folder which is renamed into place at
    the end, so an interrupted run never leaves a half dataset under the final name.

    Args:
        out_root: the raw-data root (created if missing).
        config: counts, seed, naming and appearance ranges.
        overwrite: replace an existing dataset folder (otherwise that is an InputError).
        num_processes: worker processes; the output does not depend on it.
        progress: show a tqdm bar over cases.

    Returns:
        The dataset folder.
    """
    validate_config(config)
    out_root = Path(out_root)
    final = out_root / config.folder_name
    if out_root.exists() and not out_root.is_dir():
        raise InputError("raw data root is not a folder", out_root)
    if final.exists() and not final.is_dir():
        raise InputError("exists and is not a folder", final)
    if final.exists() and not overwrite:
        raise InputError("dataset folder already exists; pass --overwrite to replace it", final)
    out_root.mkdir(parents=True, exist_ok=True)
    work = out_root / f".{final.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    work.mkdir()
    try:
        jobs = [(work, source, index, config) for source, index in case_plan(config)]
        for source in {source for _, source, _, _ in jobs}:
            (work / source).mkdir()
            if SOURCE_LABELS[source]:
                (work / SOURCE_LABELS[source]).mkdir()
        parallel_map(_write_case, jobs, num_processes, desc="synthesising", progress=progress)
        write_json(work / "dataset.json", dataset_json(config))
        old = work.with_name(work.name.replace(".tmp-", ".old-"))
        if final.exists():
            os.replace(final, old)
        os.replace(work, final)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return final
