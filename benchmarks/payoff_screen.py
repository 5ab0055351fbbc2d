"""Compare fine-tuning variants that live in different studies, paired with random init.

Each ``sslunet_study`` keeps its own runs; a screen of recipes (one study per recipe) compares
each study's pretrained inits with the random-init runs of a baseline study that used the same
schedule, labelled cases (fold, seed) and budget. Reads every study's ``runs.json``.

Usage::

    python benchmarks/payoff_screen.py -d Dataset910_ACDCBench --baseline acdc_protocol \\
        --studies scr_plain scr_nnunet scr_freeze --budget 2 [--out docs/results/x.md]

Prints one markdown row per (study, init): test Dice mean ± std over seeds (n), the paired gain
over random (mean ± sample std of per-seed differences, pairs that gained), the paired
convergence speed-up, and Dice per class.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from sslunet.paths import Paths
from sslunet.runs.layout import STUDY_RUNS
from sslunet.study.metrics import class_names
from sslunet.study.paired import (
    gain_cell, level_speedup_cell, paired_differences, paired_level_speedups, paired_speedups,
    speedup_cell, summary,
)


def load_rows(results: Path, dataset: str, study: str) -> list[dict]:
    path = results / dataset / "study" / study / STUDY_RUNS
    return json.loads(path.read_text()) if path.exists() else []


def variant_rows(results: Path, dataset: str, baseline: str, studies: list[str]) -> list[dict]:
    """Random-init rows of ``baseline`` (init "random") and every other init of ``studies``,
    renamed ``<study>:<init>``."""
    rows = [r for r in load_rows(results, dataset, baseline) if r["init"] == "random"]
    for s in studies:
        rows += [{**r, "init": f"{s}:{r['init']}"} for r in load_rows(results, dataset, s)
                 if r["init"] != "random"]
    return rows


def _mean_cell(values: list[float]) -> str:
    m, s, n = summary(values)
    if m is None:
        return "n/a"
    return f"{m:.3f}" + ("" if s is None else f" ± {s:.3f}") + f" (n={n})"


def table(rows: list[dict], budget: str, metric: str = "test_dice_mean") -> str:
    inits = list(dict.fromkeys(r["init"] for r in rows))
    classes = class_names(rows, "test_")
    head = ["variant", metric, "paired gain vs random", "convergence speed-up",
            "speed-up to random's quality"] + classes
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for init in inits:
        mine = [r for r in rows if r["init"] == init and r["budget"] == budget
                and r.get("status") == "ok"]
        if not mine:
            continue
        gain = "" if init == "random" else gain_cell(paired_differences(rows, init, budget, metric))
        speed = "" if init == "random" else speedup_cell(paired_speedups(rows, init, budget))
        level = "" if init == "random" else level_speedup_cell(
            paired_level_speedups(rows, init, budget))
        per_class = [f"{summary([r[f'test_dice_{c}'] for r in mine])[0]:.3f}" for c in classes]
        lines.append("| " + " | ".join([init, _mean_cell([r[metric] for r in mine]), gain, speed, level]
                                        + per_class) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-d", "--dataset", required=True)
    p.add_argument("--baseline", required=True, help="study holding the random-init runs")
    p.add_argument("--studies", nargs="+", required=True)
    p.add_argument("--budget", default="2")
    p.add_argument("--out", help="also write the table to this file")
    args = p.parse_args()
    results = Paths.from_environ(os.environ).results
    text = table(variant_rows(results, args.dataset, args.baseline, args.studies), args.budget)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
