"""Run records: ``metrics.jsonl`` (one line per epoch), a readable log, ``progress.png``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from sslunet.runs.layout import LOG_FILE, METRICS_FILE, PROGRESS_PLOT, read_metrics
from sslunet.utils.atomic import atomic_path


class RunLog:
    """Writes the human-readable log and the per-epoch metrics of one run (rank 0 only)."""

    def __init__(self, out_dir: Path, enabled: bool = True, echo: bool = True):
        self.out_dir, self.enabled, self.echo = Path(out_dir), enabled, echo
        self.log_path = self.out_dir / LOG_FILE
        self.metrics_path = self.out_dir / METRICS_FILE

    def log(self, msg: str) -> None:
        if not self.enabled:
            return
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')}  {msg}"
        with open(self.log_path, "a") as f:
            f.write(line + "\n")
        if self.echo:
            print(msg, file=sys.stderr)

    def read_metrics(self) -> list[dict]:
        return read_metrics(self.out_dir)

    def truncate_metrics(self, first_epoch_to_drop: int) -> None:
        """On resume, drop records of epochs that will run again (written after the last
        checkpoint of a killed run)."""
        if not self.enabled or not self.metrics_path.exists():
            return
        keep = [r for r in self.read_metrics() if r["epoch"] < first_epoch_to_drop]
        with atomic_path(self.metrics_path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))

    def append_metrics(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def plot(self) -> None:
        if self.enabled:
            plot_progress(self.read_metrics(), self.out_dir / PROGRESS_PLOT)


def late_change(values: list) -> str:
    """How much the loss still moved late in the run: the mean of its last fifth of epochs
    against the fifth before it (a loss still falling by several % has not converged)."""
    vals = [v for v in values if v is not None]
    k = len(vals) // 5
    if k < 1:
        return "too few epochs to judge convergence"
    before, last = sum(vals[-2 * k:-k]) / k, sum(vals[-k:]) / k
    change = (last - before) / abs(before) if before else 0.0
    return f"last {k} epoch(s) vs the {k} before: {change:+.1%}"


def plot_progress(records: list[dict], path: Path) -> None:
    """Loss curves (top), validation metric and EMA (middle), learning rate (bottom)."""
    if not records:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in records]
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    axes[0].plot(ep, [r["train_loss"] for r in records], label="train loss")
    if any(r.get("val_loss") is not None for r in records):
        axes[0].plot(ep, [r.get("val_loss") for r in records], label="validation loss")
    axes[0].set_ylabel("loss")
    axes[0].legend()
    if any(r.get("pseudo_dice") is not None for r in records):
        axes[1].plot(ep, [r.get("pseudo_dice") for r in records], label="pseudo Dice")
        axes[1].plot(ep, [r.get("ema_metric") for r in records], label="EMA")
        axes[1].set_ylabel("pseudo Dice (val patches)")
        axes[1].legend()
    else:  # pretraining: is the loss still falling? a log scale shows late, small gains
        key = "val_loss" if any(r.get("val_loss") is not None for r in records) else "train_loss"
        values = [r.get(key) for r in records]
        axes[1].plot(ep, values, label=key.replace("_", " "))
        if all(v is not None and v > 0 for v in values):
            axes[1].set_yscale("log")
        axes[1].set_ylabel("loss (log scale)")
        axes[1].set_title(late_change(values), fontsize=9)
        axes[1].legend()
    axes[2].plot(ep, [r["lr"] for r in records])
    axes[2].set_ylabel("learning rate")
    axes[2].set_xlabel("epoch")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
