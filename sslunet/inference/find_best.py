"""``sslunet_find_best``: which trained configuration (or ensemble of two) to predict with.

As nnU-Net's ``find_best_configuration``: every finished model folder of a dataset is scored
on its cross-validation predictions (``fold_K/validation/``: cases each fold never trained
on), and so is every pair of them whose validation probabilities were kept
(``sslunet_finetune --npz``), averaged in each image's geometry. The ranking is by the mean
foreground Dice over all validation cases of the folds every candidate has. The winner gets
its post-processing decided on those same cases (an ensemble gets its own folder
``results/<dataset>/ensembles/<A>+<B>/``), and the exact ``sslunet_predict`` command is printed
and written to ``results/<dataset>/find_best.json``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from sslunet.dataset.labels import foreground_labels
from sslunet.dataset.imageio import read_array
from sslunet.errors import InputError
from sslunet.evaluation.metrics import dice
from sslunet.inference.ensemble import EnsembleSpec, average_probabilities
from sslunet.inference.postprocessing import determine_postprocessing
from sslunet.paths import Paths
from sslunet.plans import Plans
from sslunet.runs.layout import (
    DATASET_FILE, FIND_BEST, PLANS_FILE, POSTPROCESSING, VALIDATION_DIR, ensemble_dir, fold_dir, fold_dirs,
    fold_name,
)
from sslunet.utils.atomic import read_json, write_json


@dataclass(frozen=True)
class FindBestOptions:
    dataset: str  # dataset folder name (DatasetXXX_Name)
    models: tuple[str, ...] = ()  # model folder names under finetune/; empty: every finished one
    ensembles: bool = True  # also try pairs (those with kept validation probabilities)


@dataclass(frozen=True)
class Candidate:
    name: str  # "A" or "A+B"
    models: tuple[Path, ...]
    dice: float  # mean foreground Dice over the validation cases


def _validation_cases(model: Path, folds: Sequence[str], ending: str) -> list[str]:
    return sorted(p.name[: -len(ending)] for f in folds
                  for p in (fold_dir(model, f) / VALIDATION_DIR).glob(f"*{ending}"))


def _common_folds(models: Sequence[Path]) -> list[str]:
    per_model = [{fold_name(d) for d in fold_dirs(m) if (d / VALIDATION_DIR).is_dir()}
                 for m in models]
    return sorted(set.intersection(*per_model)) if per_model else []


def _predictions(models: Sequence[Path], folds, case: str, ending: str) -> np.ndarray:
    """The case's label map: one model's, or the argmax of the members' mean probabilities."""
    files = [next(fold_dir(m, f) / VALIDATION_DIR / f"{case}{ending}" for f in folds
                  if (fold_dir(m, f) / VALIDATION_DIR / f"{case}{ending}").exists())
             for m in models]
    if len(models) == 1:
        return read_array(files[0], dtype=None)[0].astype(np.int64)
    npz = [f.with_name(f"{case}.npz") for f in files]
    return average_probabilities(npz).argmax(0).astype(np.int64)


def _score(pairs, labels: dict[str, int], ignore: int | None = None) -> float:
    """Mean foreground Dice; reference voxels labelled ``ignore`` are not scored."""
    return float(np.mean([np.mean([dice(ref == v, (pred == v) & (ref != ignore))
                                   for v in labels.values()]) for ref, pred in pairs]))


def find_best(paths: Paths, opts: FindBestOptions) -> dict:
    """Rank the candidates; store the winner's post-processing; return the report."""
    root = paths.results / opts.dataset
    models = [root / "finetune" / m for m in opts.models] or [
        d for d in sorted((root / "finetune").glob("*")) if d.is_dir() and _common_folds([d])]
    for m in models:
        if not m.is_dir():
            raise InputError("model folder does not exist", m)
    if not models:
        raise InputError("no finished model to compare (train one with sslunet_finetune)", root)
    folds = _common_folds(models)
    if not folds:
        raise InputError("the models share no fold with validation predictions: "
                         + ", ".join(m.name for m in models), root / "finetune")
    plans = Plans.load(models[0] / PLANS_FILE)
    labels = foreground_labels(plans.labels)
    ending = read_json(models[0] / DATASET_FILE)["file_ending"]
    ref_dir = paths.preprocessed / opts.dataset / "gt_segmentations"
    cases = _validation_cases(models[0], folds, ending)
    for m in models[1:]:
        if _validation_cases(m, folds, ending) != cases:
            raise InputError(f"other validation cases than {models[0].name} in folds "
                             f"{', '.join(folds)} (other splits?)", m)
    refs = {c: read_array(ref_dir / f"{c}{ending}", dtype=None)[0].astype(np.int64)
            for c in cases}
    groups = [(m,) for m in models]
    if opts.ensembles:
        groups += [g for g in itertools.combinations(models, 2)
                   if all(_has_probabilities(m, folds, cases) for m in g)]
    scored = []
    for group in groups:
        pairs = [(refs[c], _predictions(group, folds, c, ending)) for c in cases]
        score = _score(pairs, labels, plans.ignore_label)
        scored.append((Candidate("+".join(m.name for m in group), group, score), pairs))
    scored.sort(key=lambda cp: -cp[0].dice)
    best, best_pairs = scored[0]
    post = determine_postprocessing(best_pairs, plans.labels, folds)
    target = best.models[0] if len(best.models) == 1 else ensemble_dir(
        paths, opts.dataset, [m.name for m in best.models])
    if len(best.models) > 1:
        EnsembleSpec(tuple(f"finetune/{m.name}" for m in best.models), tuple(folds)).save(target)
    post.save(target / POSTPROCESSING)
    report = {"dataset": opts.dataset, "folds": folds, "num_cases": len(cases),
              "ranking": [{"name": c.name, "dice": round(c.dice, 4)} for c, _ in scored],
              "best": best.name, "model_folder": str(target),
              "postprocessing": post.dice,
              "predict": f"sslunet_predict -d {opts.dataset} -i INPUT_FOLDER -o OUTPUT_FOLDER "
                         f"-m {target}"}
    write_json(root / FIND_BEST, report)
    return report


def _has_probabilities(model: Path, folds, cases) -> bool:
    found = {p.stem for f in folds for p in (fold_dir(model, f) / VALIDATION_DIR).glob("*.npz")}
    return set(cases) <= found
