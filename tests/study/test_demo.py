"""The demo pipeline end to end, with tiny schedules (the real one takes ~15 CPU minutes)."""

from __future__ import annotations

import csv

import pytest

from sslunet.paths import Paths
from sslunet.study.demo import DemoSettings, run_demo

TINY = DemoSettings(num_labeled=4, num_unlabeled=3, num_test=2, base_features=4,
                    small_budget="1",
                    finetune=dict(epochs=1, iters_per_epoch=2, val_iters=1, batch_size=2),
                    pretrain=dict(epochs=2, iters_per_epoch=1, batch_size=4), tta=False)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_demo_produces_table_plots_and_overlay(tmp_path, capsys):
    out = run_demo(Paths.under(tmp_path), TINY, device="cpu", num_workers=0, name="tiny")
    for f in ("study.csv", "study.md", "dice_vs_labels.png", "convergence.png", "overlay.png"):
        assert (out / f).stat().st_size > 0, f
    rows = list(csv.DictReader(open(out / "study.csv")))
    assert {r["init"] for r in rows} == {"random", "regression", "mae"}
    assert {r["budget"] for r in rows} == {"1", "all"}
    assert all(r["status"] == "ok" for r in rows), [r["status"] for r in rows]
    assert all(r["test_dice_mean"] != "" for r in rows)  # test cases were scored
    assert "test_dice_mean" in capsys.readouterr().out  # the table was printed
    # a second run reuses everything (pretraining and fine-tuning are skipped)
    stamp = (out / "study.csv").stat().st_mtime_ns
    ckpts = sorted(out.glob("finetune/*/fold_0/checkpoint_final.pt"))
    assert len(ckpts) == 6  # 3 inits x 2 budgets, inside the study's folder
    before = [p.stat().st_mtime_ns for p in ckpts]
    run_demo(Paths.under(tmp_path), TINY, device="cpu", num_workers=0, name="tiny")
    assert [p.stat().st_mtime_ns for p in ckpts] == before
    assert (out / "study.csv").stat().st_mtime_ns >= stamp
