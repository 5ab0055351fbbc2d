"""Evaluate a folder of predicted label maps against a folder of reference label maps.

Files are matched by name. Every prediction needs a reference of the same name; a reference
without a prediction is an error too unless ``allow_missing`` is set, in which case it is listed
under ``missing_predictions`` in the summary and not scored (a missing case is not silently
counted as a failure nor as a success). All geometry is checked, and all metrics computed, before
anything is written, so a failed run leaves the output folder as it was.

Which classes are scored: the ``labels`` argument if given, else the ``labels`` of the
``dataset.json`` named by ``dataset_json``, else of ``REF_DIR/../dataset.json`` when that exists
and has labels, else every nonzero value found in any reference or prediction (named by value).
Label 0 is background and never scored. See :mod:`sslunet.evaluation.metrics` for the metric
definitions and the empty-mask rules.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from sslunet.dataset.labels import foreground_labels, ignore_value
from sslunet.dataset.imageio import Geometry, read_header, read_sitk
from sslunet.errors import InputError
from sslunet.evaluation.metrics import EMPTY_MASK_NOTES, case_metrics, class_metrics
from sslunet.utils.atomic import atomic_path, write_json
from sslunet.utils.processes import die_with_parent

CSV_COLUMNS = ("case", "class", "label", "dice", "hd95", "volume_ref_ml", "volume_pred_ml",
               "volume_diff_ml", "volume_diff_rel", "ref_empty", "pred_empty")


def geometry_difference(ref: Geometry, pred: Geometry) -> str:
    """Describe how a prediction's grid differs from its reference's ("" when they agree).

    Uses the toolkit's one definition of "same geometry" (:meth:`Geometry.differences`:
    size exact, spacing and direction within 1e-4, origin within 1e-4 relative).
    """
    diffs = pred.differences(ref)
    if diffs:
        return "differs from its reference in " + "; ".join(diffs)
    if pred.components != 1 or ref.components != 1:
        return f"label maps must have one component (got {pred.components} and {ref.components})"
    return ""


def load_labels(ref_dir: Path, dataset_json: Path | None) -> tuple[dict[str, int] | None, str]:
    """Find the classes to score: ``(labels or None to infer them, where they came from)``."""
    path = dataset_json
    if path is None:
        path = ref_dir.parent / "dataset.json"
        if not path.is_file():
            return None, "inferred from the label values present"
    if not path.is_file():
        raise InputError("dataset.json not found", path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"not readable JSON ({type(e).__name__})", path) from None
    labels = raw.get("labels") if isinstance(raw, dict) else None
    if labels is None and dataset_json is None:
        return None, "inferred from the label values present"
    if not isinstance(labels, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in labels.values()):
        raise InputError("'labels' must map class names to non-negative integer values "
                         "(region labels are not supported)", path)
    return {str(k): v for k, v in labels.items() if v != 0}, str(path)


def match_cases(ref_dir: Path, pred_dir: Path, file_ending: str, allow_missing: bool,
                only: set[str] | None = None) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Pair predictions with references by file name: ``([(ref, pred)], missing case names)``."""
    for folder, what in ((ref_dir, "reference"), (pred_dir, "prediction")):
        if folder.is_file():
            raise InputError(f"is a file; give the {what} folder (the one holding the label "
                             "maps)", folder)
        if not folder.is_dir():
            raise InputError(f"{what} folder does not exist", folder)

    def listing(folder: Path) -> dict[str, Path]:
        return {p.name: p for p in sorted(folder.iterdir())
                if p.is_file() and p.name.endswith(file_ending) and not p.name.startswith(".")}

    refs, preds = listing(ref_dir), listing(pred_dir)
    if only is not None:  # a subset of the references is in play (e.g. one fold's validation)
        refs = {n: p for n, p in refs.items() if n[: -len(file_ending)] in only}
    if not preds:
        raise InputError(f"no prediction files ending in '{file_ending}'", pred_dir)
    for name, pred in preds.items():
        if name not in refs:
            raise InputError(f"no reference of the same name in {ref_dir}", pred)
    missing = sorted(set(refs) - set(preds))
    if missing and not allow_missing:
        raise InputError(f"{len(missing)} reference(s) have no prediction (first: {missing[0]}); "
                         "pass --allow-missing to score only the predicted cases", pred_dir)
    return [(refs[name], pred) for name, pred in preds.items()], missing


def _read_label_map(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """Label array (numpy order, shape ``S``) and its spacing in numpy order."""
    image = read_sitk(path)  # missing, truncated, unreadable, implausible spacing: InputError
    array = sitk.GetArrayFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.array_equal(array, np.round(array)):
            raise InputError("not a label map: it holds non-integer values", path)
        array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise InputError("not a label map: it holds negative values", path)
    # SimpleITK's spacing is (x, y, z); the array is (z, y, x).
    return array, tuple(float(s) for s in image.GetSpacing()[::-1])


def _present_values(array: np.ndarray) -> set[int]:
    return {int(v) for v in np.unique(array) if v != 0}


def _evaluate_case(task: tuple[Path, Path, dict[str, int] | None, int | None]) -> dict:
    """Worker: score one (reference, prediction) pair; module level so a process pool can run it."""
    ref_path, pred_path, labels, ignore = task
    ref, spacing = _read_label_map(ref_path)
    pred, _ = _read_label_map(pred_path)
    present = (_present_values(ref) | _present_values(pred)) - {ignore}
    chosen = labels if labels is not None else {str(v): v for v in sorted(present)}
    record = {"case": pred_path.name, "reference": str(ref_path), "prediction": str(pred_path),
              "spacing": list(spacing), "metrics": case_metrics(ref, pred, spacing, chosen, ignore),
              "label_values_present": sorted(present)}
    unlisted = sorted(present - set(chosen.values()))
    if unlisted:
        record["unlisted_label_values"] = unlisted
        for path, array in ((ref_path, ref), (pred_path, pred)):
            values = sorted(_present_values(array) - set(chosen.values()) - {ignore})
            if values:  # reported on screen by evaluate_folders (workers must not print)
                record.setdefault("unlisted_in", {})[str(path)] = values
    return record


def _run_cases(tasks: list, num_processes: int) -> Iterator[dict]:
    if num_processes == 1:
        yield from tqdm(map(_evaluate_case, tasks), total=len(tasks), desc="evaluating",
                        disable=None)
        return
    pool = ProcessPoolExecutor(max_workers=num_processes, initializer=die_with_parent,
                               initargs=(os.getpid(),))
    try:
        yield from tqdm(pool.map(_evaluate_case, tasks), total=len(tasks), desc="evaluating",
                        disable=None)
    finally:
        # On an error (one bad file) don't wait for the rest of the queue.
        pool.shutdown(wait=True, cancel_futures=True)


def _stats(values: Iterable[float]) -> dict[str, float | int | None]:
    """Mean and population std over the finite values; ``undefined`` counts the NaNs."""
    values = np.asarray(list(values), dtype=float)
    finite = values[np.isfinite(values)]
    mean = float(finite.mean()) if finite.size else None
    std = float(finite.std()) if finite.size else None
    return {"mean": mean, "std": std, "n": int(finite.size),
            "undefined": int(values.size - finite.size)}


def summarize(records: list[dict], labels: dict[str, int]) -> tuple[dict, dict]:
    """Per-class statistics and their mean over the foreground classes."""
    per_class = {}
    for name in labels:
        rows = [r["metrics"][name] for r in records]
        per_class[name] = {key: _stats(row[key] for row in rows)
                           for key in ("dice", "hd95", "volume_diff_ml", "volume_diff_rel")}
    foreground = {}
    for key in ("dice", "hd95", "volume_diff_ml", "volume_diff_rel"):
        means = [c[key]["mean"] for c in per_class.values() if c[key]["mean"] is not None]
        foreground[key] = float(np.mean(means)) if means else None
    foreground["hd95_undefined"] = sum(c["hd95"]["undefined"] for c in per_class.values())
    return per_class, foreground


def _json_safe(obj):
    """NaN -> None (JSON null): strict JSON has no NaN."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_csv(path: Path, records: list[dict], labels: dict[str, int]) -> None:
    """One row per case and class, written atomically; undefined values are ``nan``."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for record in records:
            for name, value in labels.items():
                m = record["metrics"][name]
                writer.writerow([record["case"], name, value] +
                                [repr(float(m[k])) for k in CSV_COLUMNS[3:9]] +
                                [int(m["ref_empty"]), int(m["pred_empty"])])


def format_table(summary: dict) -> str:
    """Per-class mean ± std of Dice and HD95 as plain text."""

    def pm(stats: dict, fmt: str) -> str:
        if stats["mean"] is None:
            return "undefined"
        return f"{stats['mean']:{fmt}} ± {stats['std']:{fmt}}"

    width = max([len("class")] + [len(n) for n in summary["per_class"]])
    lines = [f"{summary['num_cases']} case(s) evaluated",
             f"{'class':<{width}}  {'Dice':>17}  {'HD95 [mm]':>17}  HD95 undefined"]
    for name, stats in summary["per_class"].items():
        lines.append(f"{name:<{width}}  {pm(stats['dice'], '.4f'):>17}  "
                     f"{pm(stats['hd95'], '.2f'):>17}  {stats['hd95']['undefined']}")
    fg = summary["foreground_mean"]
    dice_text = "undefined" if fg["dice"] is None else f"{fg['dice']:.4f}"
    hd_text = "undefined" if fg["hd95"] is None else f"{fg['hd95']:.2f}"
    lines.append(f"{'mean':<{width}}  {dice_text:>17}  {hd_text:>17}  {fg['hd95_undefined']}")
    return "\n".join(lines)


def _fill_inferred(records: list[dict]) -> dict[str, int]:
    """Labels inferred from every case; classes absent from a case are scored as both empty."""
    values = sorted({v for r in records for v in r["label_values_present"]})
    labels = {str(v): v for v in values}
    empty = np.zeros(1, dtype=bool)
    for record in records:
        metrics = record["metrics"]
        record["metrics"] = {name: metrics.get(name) or class_metrics(empty, empty, (1.0,))
                             for name in labels}
    return labels


def _check_all_geometry(pairs: list[tuple[Path, Path]]) -> None:
    for ref_path, pred_path in pairs:
        problem = geometry_difference(read_header(ref_path), read_header(pred_path))
        if problem:
            raise InputError(f"geometry differs from reference {ref_path.name}: {problem}",
                             pred_path)


def evaluate_folders(ref_dir: Path, pred_dir: Path, labels: dict[str, int] | None = None,
                     file_ending: str = ".nii.gz", num_processes: int = 1,
                     output: Path | None = None, dataset_json: Path | None = None,
                     allow_missing: bool = False, verbose: bool = True,
                     reference_cases: list[str] | None = None) -> dict:
    """Score every prediction in ``pred_dir`` against its namesake in ``ref_dir``.

    Args:
        ref_dir: Folder of reference label maps.
        pred_dir: Folder of predicted label maps (same file names).
        labels: Class name to label value; overrides ``dataset_json`` (see the module docstring).
        file_ending: Only files ending in this are cases.
        num_processes: Worker processes (1: evaluate in this process).
        output: Folder for ``summary.json`` and ``summary.csv`` (default: ``pred_dir``).
        dataset_json: A ``dataset.json`` whose ``labels`` name the classes.
        allow_missing: Score only the predicted cases when some references have no prediction.
        verbose: Print the per-class table to stdout.
        reference_cases: Only these case ids (file names without ending) count as references.

    Returns:
        The summary, as written to ``summary.json`` (with NaN where the file has null).

    Raises:
        InputError: Missing folders, no predictions, unmatched files, unreadable images,
            non-label images, or a prediction whose geometry differs from its reference.
    """
    ref_dir, pred_dir = Path(ref_dir), Path(pred_dir)
    output = Path(output) if output is not None else pred_dir
    if num_processes < 1:
        raise InputError(f"number of processes must be at least 1, got {num_processes}")
    if output.exists() and not output.is_dir():
        raise InputError("output exists and is not a folder", output)
    labels, ignore, labels_source = _scored_labels(labels, ref_dir, dataset_json)
    pairs, missing = match_cases(ref_dir, pred_dir, file_ending, allow_missing,
                                  None if reference_cases is None else set(reference_cases))
    _check_all_geometry(pairs)
    records = list(_run_cases([(r, p, labels, ignore) for r, p in pairs], num_processes))
    if labels is None:
        labels = _fill_inferred(records)
    per_class, foreground = summarize(records, labels)
    summary = {
        "reference_folder": str(ref_dir), "prediction_folder": str(pred_dir),
        "file_ending": file_ending, "labels": labels, "labels_source": labels_source,
        "ignore_label": ignore,
        "notes": EMPTY_MASK_NOTES, "num_cases": len(records),
        "missing_predictions": missing, "per_class": per_class, "foreground_mean": foreground,
        "per_case": records,
    }
    write_json(output / "summary.json", _json_safe(summary))
    write_csv(output / "summary.csv", records, labels)
    if verbose:
        _report(summary)
    return summary


def _scored_labels(labels: dict[str, int] | None, ref_dir: Path, dataset_json: Path | None
                   ) -> tuple[dict[str, int] | None, int | None, str]:
    """``(foreground classes, ignore label, where they came from)``; classes None: infer them
    from the label values found."""
    if labels is not None:
        source = "given by the caller"
        labels = {k: int(v) for k, v in labels.items() if int(v) != 0}
    else:
        labels, source = load_labels(ref_dir, dataset_json)
    if labels is None:
        return None, None, source
    return foreground_labels(labels), ignore_value(labels), source


def _report(summary: dict) -> None:
    """The per-class table on stdout; unscored label values and missing predictions on stderr."""
    classes = sorted(summary["labels"].values())
    for record in summary["per_case"]:
        for path, values in record.get("unlisted_in", {}).items():
            print(f"warning: {path}: label value(s) {values} are not among the scored "
                  f"classes {classes} ({summary['labels_source']}); they are not scored",
                  file=sys.stderr)
    print(format_table(summary))
    if summary["missing_predictions"]:
        print(f"{len(summary['missing_predictions'])} reference(s) without prediction were "
              "not scored", file=sys.stderr)
