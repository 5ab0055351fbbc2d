"""Ensembles of trained models (e.g. 2d + 3d_fullres): average their class probabilities.

Models of different configurations see different preprocessed grids, so their probabilities
are averaged in each image's original geometry, after each model has reverted its own
preprocessing (as nnU-Net's ``nnUNetv2_ensemble`` does with the ``.npz`` files). An ensemble
folder (``results/<dataset>/ensembles/<A>+<B>/``, written by ``sslunet_find_best``) holds
``ensemble.json`` (its member model folders) and the ensemble's own ``postprocessing.json``;
``sslunet_predict -m`` accepts it like a model folder.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from sslunet.dataset.labels import foreground_labels
from sslunet.dataset.imageio import read_header, write_array
from sslunet.dataset.raw import SUPPORTED_ENDINGS
from sslunet.errors import InputError
from sslunet.inference.postprocessing import PostprocessingPlan, apply_postprocessing
from sslunet.plans import Plans
from sslunet.runs.layout import ENSEMBLE_FILE, ENSEMBLE_WORK, PLANS_FILE
from sslunet.utils.atomic import atomic_path, read_json, write_json
from sslunet.utils.serialization import from_dict, to_dict

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class EnsembleSpec:
    """Member model folders, relative to the ensemble folder's ``results/<dataset>/``."""

    models: tuple[str, ...]
    folds: tuple[str, ...] = ()  # the cross-validation folds the choice was made on
    schema_version: int = SCHEMA_VERSION

    def save(self, folder: Path) -> None:
        write_json(Path(folder) / ENSEMBLE_FILE, to_dict(self))

    @classmethod
    def load(cls, folder: Path) -> "EnsembleSpec":
        path = Path(folder) / ENSEMBLE_FILE
        try:
            spec = from_dict(cls, read_json(path))
        except (ValueError, TypeError, KeyError) as e:
            raise InputError(f"not an ensemble description ({e})", path) from None
        if spec.schema_version != SCHEMA_VERSION or len(spec.models) < 2:
            raise InputError("unsupported ensemble description (version "
                             f"{spec.schema_version}, {len(spec.models)} model(s))", path)
        return spec


def is_ensemble_folder(folder: Path) -> bool:
    return (Path(folder) / ENSEMBLE_FILE).is_file()


def member_models(folder: Path) -> list[Path]:
    """The model folders of an ensemble folder (each must exist)."""
    folder = Path(folder)
    models = [(folder.parent.parent / m).resolve() for m in EnsembleSpec.load(folder).models]
    for m in models:
        if not m.is_dir():
            raise InputError("ensemble member model folder does not exist", m)
    return models


def average_probabilities(files: Sequence[Path]) -> np.ndarray:
    """Mean of the ``probabilities`` arrays ``(K, *shape)`` of ``.npz`` files (float32)."""
    total = None
    for f in files:
        with np.load(f) as data:
            p = data["probabilities"].astype(np.float32)
        if total is not None and p.shape != total.shape:
            raise InputError(f"probabilities of shape {p.shape} cannot be averaged with "
                             f"{total.shape} (another image or label set?)", f)
        total = p if total is None else total + p
    return total / len(files)


def ensemble_case(prob_files: Sequence[Path], geometry_from: Path, out_file: Path,
                  postprocessing: PostprocessingPlan | None, foreground: Sequence[int]
                  ) -> np.ndarray:
    """Average one case's probabilities, argmax, post-process, write with the geometry of
    ``geometry_from`` (a label map one member wrote for the same image); returns the map."""
    seg = average_probabilities(prob_files).argmax(0).astype(np.uint8)
    seg = apply_postprocessing(seg, postprocessing, foreground)
    write_array(out_file, seg, read_header(geometry_from))
    return seg


def check_members(models: Sequence[Path]) -> None:
    """Members must agree on input channels and labels (checked before anything runs)."""
    from_plans = []
    for m in models:
        plans_file = Path(m) / PLANS_FILE
        if not plans_file.is_file():
            raise InputError("not a model folder (no plans.json)", m)
        plans = Plans.load(plans_file)
        from_plans.append((plans.num_input_channels, plans.labels))
    for m, meta in zip(models[1:], from_plans[1:]):
        if meta != from_plans[0]:
            raise InputError(f"cannot be ensembled with {models[0]}: other input channels or "
                             "labels", m)


def predict_ensemble(opts, models: Sequence[Path], post: PostprocessingPlan | None,
                     predict_one: Callable) -> tuple[list[str], list[str]]:
    """Each member predicts every case with probabilities into a work folder inside the output
    folder (kept until the end, so an interrupted run resumes); then per case the averaged
    probabilities give the label map. Returns ``(predicted, skipped)`` case ids.

    Args:
        opts: the :class:`~sslunet.inference.api.PredictOptions` of the run.
        models: the member model folders.
        post: the ensemble's post-processing (None: none).
        predict_one: predicts one model into a folder (``PredictOptions -> summary``).
    """
    check_members(models)
    out = Path(opts.output_dir)
    work = out / ENSEMBLE_WORK
    members = [predict_one(dataclasses.replace(
        opts, model=Path(m), ensemble=(), output_dir=work / f"member{i}", overwrite=False,
        save_probabilities=True, postprocessing=False)) for i, m in enumerate(models)]
    first = members[0]
    foreground = list(foreground_labels(first.model.plans.labels).values())
    predicted, skipped = [], []
    endings = sorted(SUPPORTED_ENDINGS, key=len, reverse=True)  # ".nii.gz" before ".gz"
    for label_map in sorted(f for f in (work / "member0").iterdir() if f.suffix != ".npz"):
        ending = next(e for e in endings if label_map.name.endswith(e))
        npz = Path(label_map.name[: -len(ending)] + ".npz")
        case, target = npz.stem, out / label_map.name
        if target.exists() and not opts.overwrite:
            skipped.append(case)
            continue
        files = [work / f"member{i}" / npz.name for i in range(len(models))]
        ensemble_case(files, label_map, target, post, foreground)
        if opts.save_probabilities:
            with atomic_path(out / npz.name, suffix=".npz") as tmp:
                np.savez_compressed(tmp, probabilities=average_probabilities(files)
                                    .astype(np.float16))
        predicted.append(case)
    shutil.rmtree(work)
    return predicted, skipped
