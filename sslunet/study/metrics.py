"""Study measures: convergence epoch and aggregation of runs into tables.

Convergence speed follows Kalapos & Gyires-Toth (2022), who report that domain-specific
pretraining makes fine-tuning converge 4-5x faster but do not publish the exact criterion. Our
operationalisation (as suggested in the methods note): the first epoch at which the validation
pseudo-Dice reaches 95% of its own maximum over the run; the speed-up of an init is the ratio of
random init's convergence epoch to its own.
"""

from __future__ import annotations

import math
from collections import defaultdict
from statistics import mean, pstdev
from typing import Iterable, Sequence


def convergence_epoch(curve: Sequence[float], fraction: float = 0.95) -> int | None:
    """Index of the first value >= ``fraction`` x max(curve); None for an empty/zero curve.

    Epochs are 0-based, as in ``metrics.jsonl``; a run that is at its best from the first epoch
    converges at epoch 0.
    """
    values = [v for v in curve if v is not None and not math.isnan(v)]
    if not values or max(values) <= 0:
        return None
    target = fraction * max(values)
    for i, v in enumerate(curve):
        if v is not None and not math.isnan(v) and v >= target:
            return i
    return None


def time_to_epoch(epoch_times: Sequence[float], epoch: int | None) -> float | None:
    """Wall time (s) of training up to and including ``epoch``."""
    if epoch is None:
        return None
    return float(sum(epoch_times[: epoch + 1]))


def _stats(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return None, None, 0
    return mean(vals), pstdev(vals), len(vals)


def aggregate(rows: list[dict], metric: str = "dice_mean") -> dict:
    """``{(init, budget): (mean, std, n)}`` of ``metric`` over folds and seeds (finished runs)."""
    groups: dict[tuple, list] = defaultdict(list)
    for r in rows:
        if r.get("status") == "ok":
            groups[(r["init"], r["budget"])].append(r.get(metric))
    return {k: _stats(v) for k, v in groups.items()}


def _fmt(m, s) -> str:
    return "n/a" if m is None else f"{m:.3f} ± {s:.3f}"


def markdown_table(rows: list[dict], inits: list[str], budgets: list[str],
                   metric: str = "dice_mean", baseline: str = "random") -> str:
    """Mean ± std of ``metric`` per init (rows) and label budget (columns), with the gain over
    ``baseline`` in a second table and the convergence speed-up in a third."""
    agg = aggregate(rows, metric)
    head = "| init | " + " | ".join(f"N={b}" for b in budgets) + " |"
    sep = "|---|" + "---|" * len(budgets)
    lines = [f"### {metric} (mean ± std over folds and seeds)", "", head, sep]
    for init in inits:
        cells = [_fmt(*agg.get((init, b), (None, None, 0))[:2]) for b in budgets]
        lines.append(f"| {init} | " + " | ".join(cells) + " |")
    if baseline in inits and len(inits) > 1:
        lines += ["", f"### gain over {baseline} init ({metric})", "", head, sep]
        for init in inits:
            if init == baseline:
                continue
            cells = []
            for b in budgets:
                a, r = agg.get((init, b), (None,))[0], agg.get((baseline, b), (None,))[0]
                cells.append("n/a" if a is None or r is None else f"{a - r:+.3f}")
            lines.append(f"| {init} | " + " | ".join(cells) + " |")
        conv = aggregate(rows, "convergence_epoch")
        lines += ["", f"### convergence epoch (95% of own max pseudo-Dice; speed-up vs "
                      f"{baseline})", "", head, sep]
        for init in inits:
            cells = []
            for b in budgets:
                c, _, _ = conv.get((init, b), (None, None, 0))
                r, _, _ = conv.get((baseline, b), (None, None, 0))
                if c is None:
                    cells.append("n/a")
                else:
                    ratio = f" ({(r + 1) / (c + 1):.2f}x)" if r is not None else ""
                    cells.append(f"{c:.1f}{ratio}")
            lines.append(f"| {init} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def class_names(rows: list[dict], prefix: str = "") -> list[str]:
    """Classes with a ``{prefix}dice_<class>`` column, in first-seen order."""
    start, names = f"{prefix}dice_", []
    for r in rows:
        for k in r:
            name = k[len(start):]
            if k.startswith(start) and name != "mean" and name not in names:
                names.append(name)
    return names


def per_class_table(rows: list[dict], inits: list[str], budgets: list[str],
                    prefix: str = "") -> str:
    """Mean ± std Dice of every class, one row per (init, budget)."""
    classes = class_names(rows, prefix)
    if not classes:
        return ""
    stats = {c: aggregate(rows, f"{prefix}dice_{c}") for c in classes}
    source = "test set" if prefix == "test_" else "fold validation cases"
    lines = [f"### Dice per class ({source}; mean ± std over folds and seeds)", "",
             "| init | N | " + " | ".join(classes) + " |", "|---|---|" + "---|" * len(classes)]
    for init in inits:
        for b in budgets:
            if (init, b) not in stats[classes[0]]:
                continue
            cells = [_fmt(*stats[c].get((init, b), (None, None, 0))[:2]) for c in classes]
            lines.append(f"| {init} | {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
