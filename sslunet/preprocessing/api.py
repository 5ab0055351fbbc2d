"""Preprocessing a whole dataset for one or more configurations, in parallel and resumable.

A case counts as done when its properties file exists and its stored target spacing still
matches the plan (so editing the spacing in ``plans.json`` redoes exactly the affected cases).
Configurations that yield the same array for a case (e.g. 2d and 3d_fullres on data that
needs no resampling) compute it once and hard-link the files into the second folder.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sslunet.dataset.raw import RawCase, RawDataset
from sslunet.dataset.verify import load_checked_case
from sslunet.plans import ConfigurationPlan, Plans
from sslunet.preprocessing.preprocessor import preprocess_case, target_spacing_for
from sslunet.preprocessing.storage import case_paths, load_properties, save_case
from sslunet.utils.parallel import parallel_map


@dataclass(frozen=True)
class _Job:
    case: RawCase
    index: int
    plans: Plans
    configs: tuple[ConfigurationPlan, ...]
    folders: tuple[Path, ...]
    overwrite: bool


def _is_current(folder: Path, case: RawCase, config: ConfigurationPlan) -> bool:
    data_p, _, props_p = case_paths(folder, case.case_id)
    if not (props_p.exists() and data_p.exists()):
        return False
    try:
        props = load_properties(folder, case.case_id)
    except (ValueError, KeyError, OSError):
        return False
    expected = target_spacing_for(config, props.spacing)
    return np.allclose(props.target_spacing, expected) and props.source == case.source


def _link_case(src: Path, dst: Path, case_id: str) -> None:
    """Give ``dst`` the same files as ``src`` (hard links; a copy across file systems)."""
    for s, d in zip(case_paths(src, case_id), case_paths(dst, case_id)):
        if not s.exists():
            continue
        tmp = d.with_name(f".{d.name}.link-tmp")
        if tmp.exists():
            tmp.unlink()
        try:
            os.link(s, tmp)
        except OSError:
            shutil.copy2(s, tmp)
        os.replace(tmp, d)


def _run_job(job: _Job) -> int:
    todo = [(c, f) for c, f in zip(job.configs, job.folders)
            if job.overwrite or not _is_current(f, job.case, c)]
    if not todo:
        return 0
    data, seg, geometry = load_checked_case(job.case, job.plans.labels)
    if job.case.source == "imagesTs":
        seg = None  # test references (labelsTs) are checked but never stored (storage.py)
    done: dict[tuple, Path] = {}
    for config, folder in todo:
        spacing_t = tuple(geometry.array_spacing[a] for a in job.plans.transpose_forward)
        key = (target_spacing_for(config, spacing_t), config.normalization_schemes,
               config.use_mask_for_norm, config.resampling)
        if key in done:
            _link_case(done[key], folder, job.case.case_id)
            continue
        out = preprocess_case(data, seg, geometry, job.plans, config, job.case.case_id,
                              job.case.source, job.index, source_file=job.case.images[0])
        save_case(folder, *out)
        done[key] = folder
    return len(todo)


def preprocess_dataset(dataset: RawDataset, plans: Plans, out_dir: Path,
                       configurations: tuple[str, ...], num_processes: int = 2,
                       overwrite: bool = False, include_test: bool = False,
                       progress: bool = True) -> int:
    """Preprocess labelled and unlabeled (and optionally test) cases; return cases written."""
    configs = tuple(plans.configuration(c) for c in configurations)
    folders = tuple(Path(out_dir) / c.data_identifier for c in configs)
    for f in folders:
        f.mkdir(parents=True, exist_ok=True)
    sources = ("imagesTr", "imagesUnlabeled") + (("imagesTs",) if include_test else ())
    cases = dataset.cases_from(*sources)
    jobs = [_Job(c, i, plans, configs, folders, overwrite) for i, c in enumerate(cases)]
    written = parallel_map(_run_job, jobs, num_processes, desc="preprocess", progress=progress)
    return sum(1 for w in written if w)


def copy_ground_truth(dataset: RawDataset, out_dir: Path, overwrite: bool = False) -> None:
    """Copy the training labels to ``gt_segmentations/`` (the reference for validation)."""
    dst = Path(out_dir) / "gt_segmentations"
    dst.mkdir(parents=True, exist_ok=True)
    for case in dataset.cases_from("imagesTr"):
        target = dst / case.label.name
        if target.exists() and not overwrite and target.stat().st_size == case.label.stat().st_size:
            continue
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(case.label, tmp)
        os.replace(tmp, target)
