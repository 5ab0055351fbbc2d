"""Tests for sslunet.study.collect: study.md and study.csv hold paths relative to the results
folder.

Expected numbers are worked out by hand here, not with the code under test (the hand-built
rows are :mod:`tests.helpers.study_rows`).
"""

from __future__ import annotations

import csv
import json

from sslunet.study.api import StudyOptions
from sslunet.study.collect import write_outputs
from tests.helpers.study_rows import BUDGETS, INITS, hand_rows


def test_study_md_and_csv_paths_are_relative_to_the_results_root(tmp_path):
    root = tmp_path / "results"
    study = root / "D001" / "study" / "s"
    study.mkdir(parents=True)
    rows = [{**r, "run_dir": str(study / "finetune" / f"{r['init']}__{r['budget']}__seed"
                                  f"{r['seed']}" / "fold_0"), "pseudo_dice_curve": [0.1, 0.5]}
            for r in hand_rows()]
    rows.append({"init": "mae", "budget": "all", "fold": "0", "seed": 0, "run_dir": "",
                 "status": f"failed: InputError: {study}/finetune/mae__all/fold_0: other"})
    opts = StudyOptions("D001", inits=tuple(INITS), budgets=tuple(BUDGETS), name="s")
    pre = [f"simclr: 1 epochs x 1 iterations ({root}/D001/pretrain/simclr__2d)"]
    write_outputs(study, rows, opts, pre, root)
    md = (study / "study.md").read_text()
    assert str(tmp_path) not in md
    assert "- simclr: 1 epochs x 1 iterations (D001/pretrain/simclr__2d)" in md
    assert "failed: InputError: D001/study/s/finetune/mae__all/fold_0: other" in md
    csv_rows = list(csv.DictReader(open(study / "study.csv")))
    assert csv_rows[0]["run_dir"] == "D001/study/s/finetune/mae__2__seed0/fold_0"
    assert str(tmp_path) not in (study / "study.csv").read_text()
    assert json.loads((study / "runs.json").read_text())[0]["run_dir"] == rows[0]["run_dir"]
