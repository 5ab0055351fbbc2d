"""Collecting one study run into a table row, test-set scoring, and writing the outputs."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from sslunet.dataset.raw import load_raw_dataset
from sslunet.inference.validation import predict_and_evaluate
from sslunet.networks import build_network
from sslunet.paths import Paths
from sslunet.plans import Plans
from sslunet.preprocessing.api import preprocess_dataset
from sslunet.planning.splits import parse_budget
from sslunet.runs.checkpoint import load_checkpoint
from sslunet.runs.layout import (
    LABELED_CASES,
    STUDY_CONVERGENCE_PLOT,
    STUDY_DICE_PLOT,
    STUDY_REPORT,
    STUDY_RUNS,
    STUDY_TABLE,
    SUMMARY,
    TEST_DIR,
    VALIDATION_DIR,
    checkpoint_path,
    read_metrics,
)
from sslunet.study.metrics import (
    convergence_epoch,
    markdown_table,
    per_class_table,
    time_to_epoch,
)
from sslunet.study.plots import plot_convergence, plot_dice_vs_labels
from sslunet.utils.atomic import atomic_path, read_json
from sslunet.utils.device import resolve_device


@dataclass(frozen=True)
class TestSet:
    case_ids: list[str]
    ref_dir: Path
    file_ending: str


def prepare_test_cases(paths: Paths, dataset: str, configuration: str, pre: Path) -> TestSet | None:
    """Preprocess the raw dataset's ``imagesTs`` (if it has ``labelsTs``) for scoring."""
    raw_dir = paths.raw / dataset
    if not (raw_dir / "labelsTs").is_dir():
        return None
    raw = load_raw_dataset(raw_dir)
    cases = [c.case_id for c in raw.cases_from("imagesTs") if c.label is not None]
    if not cases:
        return None
    plans = Plans.load(pre / "plans.json")
    preprocess_dataset(raw, plans, pre, (configuration,), num_processes=2, include_test=True,
                       progress=False)
    return TestSet(cases, raw_dir / "labelsTs", raw.file_ending)


def _mean_fg(summary: dict, key: str) -> float | None:
    v = summary.get("foreground_mean", {}).get(key)
    return v.get("mean") if isinstance(v, dict) else v


def _per_class(summary: dict, prefix: str) -> dict:
    out = {}
    for name, stats in summary.get("per_class", {}).items():
        out[f"{prefix}dice_{name}"] = stats.get("dice", {}).get("mean")
    return out


def run_row(init, budget, fold, seed, n_all, run_dir, status) -> dict:
    n, slices = parse_budget(str(budget))
    return {"init": init, "budget": str(budget), "n_labeled": n_all if n is None else n,
            "labeled_slices": "" if slices is None else slices, "fold": str(fold),
            "seed": seed, "status": status, "run_dir": "" if run_dir is None else str(run_dir)}


def score_test(run_dir: Path, test: TestSet, plans_path: Path, configuration: str,
               device: str, tta: bool = True, amp: bool = True) -> dict:
    """Predict the test cases with the run's final network (once) and return the summary."""
    summary_path = run_dir / TEST_DIR / SUMMARY
    if summary_path.exists():
        return read_json(summary_path)
    plans = Plans.load(plans_path)
    config = plans.configuration(configuration)
    dev = resolve_device(device)
    net = build_network(config, plans.num_input_channels, plans.num_classes, False)
    net.load_state_dict(load_checkpoint(checkpoint_path(run_dir))["network_weights"])
    net.to(dev)
    return predict_and_evaluate(net, plans, config, plans_path.parent / config.data_identifier,
                                test.case_ids, run_dir / TEST_DIR, test.ref_dir,
                                test.file_ending, dev, tta, desc="test", amp=amp)


def collect_run(opts, pre: Path, init, budget, fold, seed, n_all, run_dir: Path,
                test: TestSet | None) -> dict:
    row = run_row(init, budget, fold, seed, n_all, run_dir, "ok")
    row["n_labeled"] = read_json(run_dir / LABELED_CASES)["num_labeled"]
    val = read_json(run_dir / VALIDATION_DIR / SUMMARY)
    row.update(_per_class(val, ""))
    row["dice_mean"] = _mean_fg(val, "dice")
    row["hd95_mean"] = _mean_fg(val, "hd95")
    records = read_metrics(run_dir)
    curve = [r.get("pseudo_dice") for r in records]
    times = [r.get("epoch_time", 0.0) for r in records]
    conv = convergence_epoch(curve)
    row.update(epochs=len(records), convergence_epoch=conv,
               time_to_converge_s=time_to_epoch(times, conv),
               finetune_time_s=round(sum(times), 2), pseudo_dice_curve=curve)
    if test is not None:
        summ = score_test(run_dir, test, pre / "plans.json", opts.configuration, opts.device,
                          opts.tta, opts.finetune_overrides.amp is not False)
        row.update(_per_class(summ, "test_"))
        row["test_dice_mean"] = _mean_fg(summ, "dice")
        row["test_hd95_mean"] = _mean_fg(summ, "hd95")
    return row


def relative_text(text: str, root: Path | None) -> str:
    """``text`` with every path under ``root`` written relative to ``root``."""
    if root is None:
        return text
    for prefix in dict.fromkeys((str(root), str(Path(root).resolve()))):
        # a whole path only: not "/x<root>/..." nor "<root>2/..."
        text = re.sub(r"(?<![\w.~/-])" + re.escape(prefix.rstrip(os.sep) + os.sep), "", text)
    return text


def relative_path(path: str, root: Path | None) -> str:
    """``path`` relative to ``root`` when it lies under it, else unchanged."""
    if root is None or not path:
        return path
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return relative_text(path, root)


def _csv_text(rows: list[dict], root: Path | None = None) -> str:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys and k != "pseudo_dice_curve"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_value(k, v, root) for k, v in r.items()})
    return buf.getvalue()


def _csv_value(key: str, v, root: Path | None):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if key == "run_dir":
        return relative_path(str(v), root)
    return relative_text(v, root) if isinstance(v, str) else v


def with_earlier_rows(out: Path, rows: list[dict]) -> list[dict]:
    """``rows`` merged into the rows that earlier invocations of this study left in
    ``runs.json``: a study re-run on a subset (one more seed, one budget again) reports every
    run its folder holds instead of forgetting the others. A grid point run again replaces its
    old row in place; new grid points come last."""
    path = out / STUDY_RUNS
    if not path.exists():
        return rows
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        print(f"[study] warning: {path}: unreadable ({type(e).__name__}); the report lists "
              f"this invocation's runs only", file=sys.stderr)
        return rows

    def key(r: dict) -> tuple:
        return r["init"], str(r["budget"]), str(r["fold"]), int(r["seed"])

    new = {key(r): r for r in rows}
    return [new.pop(key(r), r) for r in earlier] + list(new.values())


def _budget_order(budget: str) -> tuple:
    """Whole-volume budgets by size with ``all`` last, then sparse ones by slices."""
    n, slices = parse_budget(budget)
    return (slices is not None, slices or 0, math.inf if n is None else n)


def write_outputs(out: Path, rows: list[dict], opts, pretrainings: list[str] = (),
                  results_root: Path | None = None) -> None:
    """``study.csv``, ``study.md``, ``dice_vs_labels.png``, ``convergence.png``, ``runs.json``.

    ``pretrainings``: one line per pretraining the study used (listed in ``study.md``).
    ``results_root``: paths under it are written relative to it in ``study.md`` and
    ``study.csv`` (``runs.json`` keeps the absolute ``run_dir``).
    """
    with atomic_path(out / STUDY_TABLE) as tmp:
        tmp.write_text(_csv_text(rows, results_root))
    with atomic_path(out / STUDY_RUNS) as tmp:
        tmp.write_text(json.dumps(rows, indent=1, default=str))
    has_test = any(r.get("test_dice_mean") is not None for r in rows)
    metric = "test_dice_mean" if has_test else "dice_mean"
    # the axes cover every row (earlier invocations' included), the requested ones first
    inits = list(dict.fromkeys([*opts.inits, *(r["init"] for r in rows)]))
    budgets = sorted(dict.fromkeys([*opts.budgets, *(str(r["budget"]) for r in rows)]),
                     key=_budget_order)
    md = [f"# Study {opts.study_name}: {opts.dataset}, {opts.configuration}", "",
          f"Dice: {'test set (imagesTs vs labelsTs)' if has_test else 'fold validation cases'}; "
          f"mean over foreground classes. Runs: {len(rows)} "
          f"({sum(r['status'] == 'ok' for r in rows)} finished)."
          + (" Paths are relative to the results folder (SSLUNET_RESULTS)." if results_root
             else ""), "",
          markdown_table(rows, inits, budgets, metric),
          per_class_table(rows, inits, budgets, "test_" if has_test else "")]
    if pretrainings:
        md += ["## Pretrainings used", ""] + [f"- {line}" for line in pretrainings] + [""]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        md += ["## Failed runs", ""] + [f"- {r['init']} N={r['budget']} fold {r['fold']} seed "
                                         f"{r['seed']}: {r['status']}" for r in failed]
    with atomic_path(out / STUDY_REPORT) as tmp:
        tmp.write_text(relative_text("\n".join(md) + "\n", results_root))
    plot_dice_vs_labels(rows, inits, out / STUDY_DICE_PLOT, metric)
    chosen = opts.convergence_budget or budgets[0]
    curves = {i: [r["pseudo_dice_curve"] for r in rows if r["init"] == i and
                  r["budget"] == chosen and r["status"] == "ok"] for i in inits}
    plot_convergence(curves, chosen, out / STUDY_CONVERGENCE_PLOT)
