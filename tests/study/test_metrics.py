"""Tests for sslunet.study.metrics: the convergence rule and study.md's tables (n per cell,
mean and sample spread, share of the all-labels Dice, per-class table).

Expected numbers are worked out by hand here, not with the code under test (the hand-built
rows are :mod:`tests.helpers.study_rows`).
"""

from __future__ import annotations

import pytest

from sslunet.study.metrics import (
    aggregate,
    convergence_epoch,
    markdown_table,
    per_class_table,
    time_to_epoch,
)
from tests.helpers.study_rows import BUDGETS, INITS, hand_rows, table_cell


@pytest.mark.parametrize("curve, expected", [
    ([0.0, 0.5, 0.9, 1.0, 0.98], 3),        # 0.95 x 1.0 first reached at epoch 3
    ([0.2, 0.96, 0.5, 1.0], 1),             # an early spike that reaches 95% counts
    ([0.8, 0.8, 0.8], 0),                   # flat: converged at once
    ([0.0, 0.0], None),                     # never learned anything
    ([0.019, 0.008, 0.0, 0.0], None),       # noise below 0.05: a collapse, not a convergence
    ([], None),
    ([float("nan"), 0.1, 0.2], 2),          # NaN epochs are skipped
    ([None, 0.5, 0.49], 1),
])
def test_convergence_epoch_known_curves(curve, expected):
    assert convergence_epoch(curve) == expected


def test_convergence_fraction_and_time():
    curve = [0.1, 0.5, 0.8, 0.9, 1.0]
    assert convergence_epoch(curve, 0.5) == 1
    assert convergence_epoch(curve, 0.85) == 3
    assert time_to_epoch([2.0, 3.0, 4.0, 5.0], 2) == 9.0
    assert time_to_epoch([1.0], None) is None


def test_table_reports_mean_std_gain_and_speedup():
    rows = [
        {"init": "random", "budget": "1", "fold": "0", "seed": 0, "status": "ok",
         "dice_mean": 0.5, "convergence_epoch": 9},
        {"init": "random", "budget": "1", "fold": "0", "seed": 1, "status": "ok",
         "dice_mean": 0.7, "convergence_epoch": 9},
        {"init": "simclr", "budget": "1", "fold": "0", "seed": 0, "status": "ok",
         "dice_mean": 0.8, "convergence_epoch": 4},
        {"init": "simclr", "budget": "1", "fold": "0", "seed": 1, "status": "failed: x",
         "dice_mean": None},
    ]
    agg = aggregate(rows)
    assert agg[("random", "1")] == pytest.approx((0.6, 0.1414, 2), abs=1e-4)  # sample std
    assert agg[("simclr", "1")][2] == 1  # the failed run is not averaged
    md = markdown_table(rows, ["random", "simclr"], ["1"])
    assert "| random | 0.600 ± 0.141 (n=2) |" in md
    assert "| simclr | 0.800 (n=1) |" in md  # one run: no spread shown
    assert "| simclr | +0.300 (1/1 > 0) |" in md  # paired with seed 0 only: 0.8 - 0.5
    assert "| simclr | 2.00x (n=1) |" in md  # (9+1)/(4+1): epochs counted from 1


def test_single_run_shows_n1_and_no_spread():
    md = markdown_table(hand_rows(), INITS, BUDGETS)
    assert table_cell(md, "dice_mean (mean", "mae") == ["0.650 (n=1)", "n/a"]
    # random N=2: 0.5, 0.6, 0.7 -> mean 0.6, sample std sqrt(0.02 / 2) = 0.100
    assert table_cell(md, "dice_mean (mean", "random") == ["0.600 ± 0.100 (n=3)",
                                                      "0.800 ± 0.000 (n=3)"]
    assert table_cell(md, "convergence epoch", "mae") == ["3.0 (n=1)", "n/a"]
    # random N=2 epochs 9, 9, 4: mean 7.33, sample std sqrt((50 / 9) / 2) = 2.89
    assert table_cell(md, "convergence epoch", "random")[0] == "7.3 ± 2.9 (n=3)"


def test_share_of_the_all_labels_dice():
    md = markdown_table(hand_rows(), INITS, BUDGETS)
    own = "relative to the same init at N=all"
    # simclr: mean at N=2 (0.55 + 0.58 + 0.80) / 3 = 0.6433; at N=all 0.85 -> 0.757
    assert table_cell(md, own, "simclr") == ["0.76"]
    assert table_cell(md, own, "random") == ["0.75"]  # 0.6 / 0.8
    assert table_cell(md, own, "mae") == ["n/a"]  # no all-labels run
    vs_random = "relative to random init at N=all"
    assert table_cell(md, vs_random, "simclr") == ["0.80", "1.06"]  # 0.6433 / 0.8, 0.85 / 0.8
    assert table_cell(md, vs_random, "random") == ["0.75", "1.00"]
    assert table_cell(md, vs_random, "mae") == ["0.81", "n/a"]  # 0.65 / 0.8
    assert "share of the all-labels" not in markdown_table(hand_rows(), INITS, ["2"])


def test_per_class_table_states_n_per_row():
    rows = [{**r, "dice_LV": r["dice_mean"], "dice_RV": r["dice_mean"] / 2} for r in hand_rows()]
    missing = next(r for r in rows if (r["init"], r["budget"], r["seed"]) == ("random", "2", 0))
    missing["dice_RV"] = None  # a class without a value in one run: that cell says its own n
    md = per_class_table(rows, INITS, BUDGETS)
    assert "| init | N | n | LV | RV |" in md
    assert "| mae | 2 | 1 | 0.650 | 0.325 |" in md  # single run: no spread, n in its column
    # RV of seeds 1, 2: 0.30, 0.35 -> mean 0.325, sample std 0.035, over 2 runs of 3
    assert "| random | 2 | 3 | 0.600 ± 0.100 | 0.325 ± 0.035 (n=2) |" in md
