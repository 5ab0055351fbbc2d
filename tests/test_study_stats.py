"""study.md statistics on hand-built rows: n per cell, paired gain, share of the all-labels Dice,
paired convergence speed-up, and paths relative to the results folder.

Expected numbers are worked out by hand here, not with the code under test.
"""

from __future__ import annotations

import csv
import json
import math

import pytest

from sslunet.study.collect import write_outputs
from sslunet.study.metrics import markdown_table, per_class_table
from sslunet.study.paired import paired_differences, paired_speedups
from sslunet.study.api import StudyOptions

# (init, budget, seed): (dice_mean, convergence_epoch); fold "0" everywhere
RUNS = {
    ("random", "2", 0): (0.50, 9), ("random", "2", 1): (0.60, 9), ("random", "2", 2): (0.70, 4),
    ("simclr", "2", 0): (0.55, 4), ("simclr", "2", 1): (0.58, 2), ("simclr", "2", 2): (0.80, 4),
    ("random", "all", 0): (0.80, 5), ("random", "all", 1): (0.80, 5),
    ("random", "all", 2): (0.80, 5),
    ("simclr", "all", 0): (0.84, 1), ("simclr", "all", 1): (0.86, 2),
    ("simclr", "all", 2): (0.85, 3),
    ("mae", "2", 0): (0.65, 3),  # a single run
}
INITS, BUDGETS = ["random", "simclr", "mae"], ["2", "all"]


def _rows() -> list[dict]:
    rows = [{"init": i, "budget": b, "n_labeled": 2 if b == "2" else 8, "fold": "0", "seed": s,
             "status": "ok", "dice_mean": d, "convergence_epoch": e}
            for (i, b, s), (d, e) in RUNS.items()]
    return rows[::-1]  # pairing must not depend on the order of the rows


def _cell(md: str, title: str, init: str) -> list[str]:
    """The cells of ``init``'s row in the table whose heading contains ``title``."""
    section = md.split(title, 1)[1].split("###", 1)[0]
    line = next(ln for ln in section.splitlines() if ln.startswith(f"| {init} |"))
    return [c.strip() for c in line.strip("|").split("|")][1:]


def test_single_run_shows_n1_and_no_spread():
    md = markdown_table(_rows(), INITS, BUDGETS)
    assert _cell(md, "dice_mean (mean", "mae") == ["0.650 (n=1)", "n/a"]
    # random N=2: 0.5, 0.6, 0.7 -> mean 0.6, sample std sqrt(0.02 / 2) = 0.100
    assert _cell(md, "dice_mean (mean", "random") == ["0.600 ± 0.100 (n=3)",
                                                      "0.800 ± 0.000 (n=3)"]
    assert _cell(md, "convergence epoch", "mae") == ["3.0 (n=1)", "n/a"]
    # random N=2 epochs 9, 9, 4: mean 7.33, sample std sqrt((50 / 9) / 2) = 2.89
    assert _cell(md, "convergence epoch", "random")[0] == "7.3 ± 2.9 (n=3)"


def test_paired_gain_mean_sample_std_and_positive_pairs():
    rows = _rows()
    diffs = [0.55 - 0.50, 0.58 - 0.60, 0.80 - 0.70]  # seeds 0, 1, 2
    assert sorted(paired_differences(rows, "simclr", "2", "dice_mean")) \
        == pytest.approx(sorted(diffs))
    m = (0.05 - 0.02 + 0.10) / 3
    sd = math.sqrt(((0.05 - m) ** 2 + (-0.02 - m) ** 2 + (0.10 - m) ** 2) / 2)  # n - 1
    assert (round(m, 3), round(sd, 3)) == (0.043, 0.060)
    md = markdown_table(rows, INITS, BUDGETS)
    gain = _cell(md, "paired gain over random", "simclr")
    # N=all: 0.04, 0.06, 0.05 -> mean 0.05, sample std 0.01
    assert gain == ["+0.043 ± 0.060 (2/3 > 0)", "+0.050 ± 0.010 (3/3 > 0)"]
    assert _cell(md, "paired gain over random", "mae") == ["+0.150 (1/1 > 0)", "n/a"]
    assert "| random |" not in md.split("paired gain", 1)[1].split("###", 1)[0]
    assert "sample std (n - 1)" in md


def test_pairs_need_the_same_fold_and_seed():
    rows = _rows() + [
        {"init": "simclr", "budget": "2", "fold": "1", "seed": 0, "status": "ok",
         "dice_mean": 0.99, "convergence_epoch": 0},  # no random run on fold 1
        {"init": "random", "budget": "2", "fold": "0", "seed": 7, "status": "failed: x"},
        {"init": "simclr", "budget": "2", "fold": "0", "seed": 7, "status": "ok",
         "dice_mean": 0.99, "convergence_epoch": 0},  # its random partner failed
    ]
    assert len(paired_differences(rows, "simclr", "2", "dice_mean")) == 3
    assert _cell(markdown_table(rows, INITS, BUDGETS), "paired gain", "simclr")[0] \
        == "+0.043 ± 0.060 (2/3 > 0)"


def test_share_of_the_all_labels_dice():
    md = markdown_table(_rows(), INITS, BUDGETS)
    own = "relative to the same init at N=all"
    # simclr: mean at N=2 (0.55 + 0.58 + 0.80) / 3 = 0.6433; at N=all 0.85 -> 0.757
    assert _cell(md, own, "simclr") == ["0.76"]
    assert _cell(md, own, "random") == ["0.75"]  # 0.6 / 0.8
    assert _cell(md, own, "mae") == ["n/a"]  # no all-labels run
    vs_random = "relative to random init at N=all"
    assert _cell(md, vs_random, "simclr") == ["0.80", "1.06"]  # 0.6433 / 0.8, 0.85 / 0.8
    assert _cell(md, vs_random, "random") == ["0.75", "1.00"]
    assert _cell(md, vs_random, "mae") == ["0.81", "n/a"]  # 0.65 / 0.8
    assert "share of the all-labels" not in markdown_table(_rows(), INITS, ["2"])


def test_speedup_is_paired_per_fold_and_seed():
    rows = _rows()
    # (epoch_random + 1) / (epoch_init + 1): seed 0 10/5, seed 1 10/3, seed 2 5/5
    ratios = [2.0, 10 / 3, 1.0]
    assert sorted(paired_speedups(rows, "simclr", "2")) == pytest.approx(sorted(ratios))
    m = sum(ratios) / 3
    sd = math.sqrt(sum((r - m) ** 2 for r in ratios) / 2)
    assert (round(m, 2), round(sd, 2)) == (2.11, 1.17)  # not the ratio of mean epochs (1.92)
    md = markdown_table(rows, INITS, BUDGETS)
    # N=all: 6/2, 6/3, 6/4 -> mean 2.17, sample std sqrt(7 / 12) = 0.76
    assert _cell(md, "speed-up over random", "simclr") == ["2.11x ± 1.17 (n=3)",
                                                          "2.17x ± 0.76 (n=3)"]
    assert _cell(md, "speed-up over random", "mae") == ["2.50x (n=1)", "n/a"]  # 10 / 4


def test_per_class_table_states_n_per_row():
    rows = [{**r, "dice_LV": r["dice_mean"], "dice_RV": r["dice_mean"] / 2} for r in _rows()]
    missing = next(r for r in rows if (r["init"], r["budget"], r["seed"]) == ("random", "2", 0))
    missing["dice_RV"] = None  # a class without a value in one run: that cell says its own n
    md = per_class_table(rows, INITS, BUDGETS)
    assert "| init | N | n | LV | RV |" in md
    assert "| mae | 2 | 1 | 0.650 | 0.325 |" in md  # single run: no spread, n in its column
    # RV of seeds 1, 2: 0.30, 0.35 -> mean 0.325, sample std 0.035, over 2 runs of 3
    assert "| random | 2 | 3 | 0.600 ± 0.100 | 0.325 ± 0.035 (n=2) |" in md


def test_study_md_and_csv_paths_are_relative_to_the_results_root(tmp_path):
    root = tmp_path / "results"
    study = root / "D001" / "study" / "s"
    study.mkdir(parents=True)
    rows = [{**r, "run_dir": str(study / "finetune" / f"{r['init']}__{r['budget']}__seed"
                                  f"{r['seed']}" / "fold_0"), "pseudo_dice_curve": [0.1, 0.5]}
            for r in _rows()]
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


def test_speedup_to_random_quality_per_pair():
    from sslunet.study.paired import level_speedup_cell, paired_level_speedups

    def row(init, seed, curve):
        return {"init": init, "budget": "2", "fold": "0", "seed": seed, "status": "ok",
                "pseudo_dice_curve": curve}

    rows = [row("random", 0, [0.1, 0.3, 0.5, 0.6, 0.6]),   # level 0.57: reached at epoch 4
            row("mae", 0, [0.3, 0.6, 0.7, 0.7, 0.7]),      # reaches 0.57 at epoch 2 -> 4/2
            row("random", 1, [0.2, 0.4, 0.4, 0.4, 0.4]),   # level 0.38: epoch 2
            row("mae", 1, [0.1, 0.1, 0.1, 0.39, 0.5]),     # epoch 4 -> 2/4
            row("random", 2, [0.5, 0.5, 0.5, 0.5, 0.5]),   # level 0.475: epoch 1
            row("mae", 2, [0.1, 0.1, 0.1, 0.1, 0.1])]      # never
    ratios = paired_level_speedups(rows, "mae", "2")
    assert ratios == [pytest.approx(2.0), pytest.approx(0.5), None]
    # mean 1.25, sample std of (2.0, 0.5) = 1.06
    assert level_speedup_cell(ratios) == "1.25x ± 1.06 (2/3 reached)"
    assert level_speedup_cell([None]) == "never (0/1 reached)"
