"""progress.png for pretraining: the loss on a log scale with its change late in the run."""

from __future__ import annotations

from sslunet.training.progress import late_change, plot_progress


def test_late_change_compares_the_last_fifth_with_the_fifth_before():
    # 10 epochs: last 2 (2.05, 2.0) vs the 2 before (2.2, 2.1): 2.025 / 2.15 - 1 = -5.8%
    assert late_change([5, 4, 3, 2.5, 2.4, 2.3, 2.2, 2.1, 2.05, 2.0]) == \
        "last 2 epoch(s) vs the 2 before: -5.8%"
    assert late_change([1.0, 0.9, 0.8]) == "too few epochs to judge convergence"


def test_pretraining_progress_plot_is_written(tmp_path):
    records = [{"epoch": e, "train_loss": 3.0 - 0.2 * e, "val_loss": 2.9 - 0.2 * e,
                "lr": 1e-3, "ema_metric": -(2.9 - 0.2 * e)} for e in range(10)]
    plot_progress(records, tmp_path / "progress.png")
    assert (tmp_path / "progress.png").stat().st_size > 1000
