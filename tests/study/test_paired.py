"""Tests for sslunet.study.paired: gains and speed-ups paired per fold and seed.

Expected numbers are worked out by hand here, not with the code under test (the hand-built
rows are :mod:`tests.helpers.study_rows`).
"""

from __future__ import annotations

import math

import pytest

from sslunet.study.metrics import (
    markdown_table,
)
from sslunet.study.paired import (
    level_speedup_cell,
    paired_differences,
    paired_level_speedups,
    paired_speedups,
)
from tests.helpers.study_rows import BUDGETS, INITS, hand_rows, table_cell


def test_paired_gain_mean_sample_std_and_positive_pairs():
    rows = hand_rows()
    diffs = [0.55 - 0.50, 0.58 - 0.60, 0.80 - 0.70]  # seeds 0, 1, 2
    assert sorted(paired_differences(rows, "simclr", "2", "dice_mean")) \
        == pytest.approx(sorted(diffs))
    m = (0.05 - 0.02 + 0.10) / 3
    sd = math.sqrt(((0.05 - m) ** 2 + (-0.02 - m) ** 2 + (0.10 - m) ** 2) / 2)  # n - 1
    assert (round(m, 3), round(sd, 3)) == (0.043, 0.060)
    md = markdown_table(rows, INITS, BUDGETS)
    gain = table_cell(md, "paired gain over random", "simclr")
    # N=all: 0.04, 0.06, 0.05 -> mean 0.05, sample std 0.01
    assert gain == ["+0.043 ± 0.060 (2/3 > 0)", "+0.050 ± 0.010 (3/3 > 0)"]
    assert table_cell(md, "paired gain over random", "mae") == ["+0.150 (1/1 > 0)", "n/a"]
    assert "| random |" not in md.split("paired gain", 1)[1].split("###", 1)[0]
    assert "sample std (n - 1)" in md


def test_pairs_need_the_same_fold_and_seed():
    rows = hand_rows() + [
        {"init": "simclr", "budget": "2", "fold": "1", "seed": 0, "status": "ok",
         "dice_mean": 0.99, "convergence_epoch": 0},  # no random run on fold 1
        {"init": "random", "budget": "2", "fold": "0", "seed": 7, "status": "failed: x"},
        {"init": "simclr", "budget": "2", "fold": "0", "seed": 7, "status": "ok",
         "dice_mean": 0.99, "convergence_epoch": 0},  # its random partner failed
    ]
    assert len(paired_differences(rows, "simclr", "2", "dice_mean")) == 3
    assert table_cell(markdown_table(rows, INITS, BUDGETS), "paired gain", "simclr")[0] \
        == "+0.043 ± 0.060 (2/3 > 0)"


def test_speedup_is_paired_per_fold_and_seed():
    rows = hand_rows()
    # (epoch_random + 1) / (epoch_init + 1): seed 0 10/5, seed 1 10/3, seed 2 5/5
    ratios = [2.0, 10 / 3, 1.0]
    assert sorted(paired_speedups(rows, "simclr", "2")) == pytest.approx(sorted(ratios))
    m = sum(ratios) / 3
    sd = math.sqrt(sum((r - m) ** 2 for r in ratios) / 2)
    assert (round(m, 2), round(sd, 2)) == (2.11, 1.17)  # not the ratio of mean epochs (1.92)
    md = markdown_table(rows, INITS, BUDGETS)
    # N=all: 6/2, 6/3, 6/4 -> mean 2.17, sample std sqrt(7 / 12) = 0.76
    assert table_cell(md, "speed-up over random", "simclr") == ["2.11x ± 1.17 (n=3)",
                                                          "2.17x ± 0.76 (n=3)"]
    assert table_cell(md, "speed-up over random", "mae") == ["2.50x (n=1)", "n/a"]  # 10 / 4


def test_speedup_to_random_quality_per_pair():
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
