"""Study figures: Dice against labelled volumes, and validation curves against epochs."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from statistics import mean, stdev

from sslunet.utils.atomic import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")


def _legend_or_note(ax) -> None:
    """A legend, or a note saying that no run has finished yet (a plot is always written)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no finished run yet", ha="center", va="center",
                transform=ax.transAxes)


def plot_dice_vs_labels(rows: list[dict], inits: list[str], path: Path,
                        metric: str = "dice_mean") -> None:
    """One line per init: mean ± std of ``metric`` against the number of labelled volumes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    all_ns: set[int] = set()
    for init in inits:
        by_n: dict[int, list[float]] = defaultdict(list)
        for r in rows:
            # whole-volume budgets only: a sparse budget is not a point on this axis
            if r["init"] == init and r.get("status") == "ok" and r.get(metric) is not None \
                    and r.get("labeled_slices") in ("", None):
                by_n[int(r["n_labeled"])].append(float(r[metric]))
        if not by_n:
            continue
        ns = sorted(by_n)
        all_ns.update(ns)
        means = [mean(by_n[n]) for n in ns]
        stds = [stdev(by_n[n]) if len(by_n[n]) > 1 else 0.0 for n in ns]
        ax.errorbar(ns, means, yerr=stds, marker="o", capsize=3, label=init)
    ax.set_xscale("log")
    # ticks at the budgets themselves, as plain numbers (not 2x10^0)
    ax.set_xticks(sorted(all_ns), [str(n) for n in sorted(all_ns)])
    ax.minorticks_off()
    ax.set_xlabel("labelled training volumes (log scale)")
    source = "test set" if metric.startswith("test_") else "validation cases"
    ax.set_ylabel(f"Dice, mean over classes ({source})")
    ax.set_title("Label efficiency")
    ax.grid(True, which="both", alpha=0.3)
    _legend_or_note(ax)
    _save(fig, path)
    plt.close(fig)


def plot_convergence(curves: dict[str, list[list[float]]], budget: str, path: Path) -> None:
    """Validation pseudo-Dice per epoch for each init (mean over runs) at one label budget."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for init, runs in curves.items():
        runs = [r for r in runs if r]
        if not runs:
            continue
        length = min(len(r) for r in runs)
        avg = [mean(r[e] for r in runs) for e in range(length)]
        ax.plot(range(1, length + 1), avg, marker=".", label=init)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation pseudo-Dice")
    ax.set_title(f"Fine-tuning convergence (N={budget})")
    ax.grid(True, alpha=0.3)
    _legend_or_note(ax)
    _save(fig, path)
    plt.close(fig)
