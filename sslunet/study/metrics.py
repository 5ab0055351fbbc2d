"""Study measures: convergence epoch and aggregation of runs into tables.

Convergence speed follows Kalapos & Gyires-Toth (2022), who report that domain-specific
pretraining makes fine-tuning converge 4-5x faster but do not publish the exact criterion. Our
operationalisation (as suggested in the methods note): the first epoch at which the validation
pseudo-Dice reaches 95% of its own maximum over the run; the speed-up of an init is the ratio
``(epoch_random + 1) / (epoch_init + 1)`` per pair of runs with the same fold and seed.

Tables: mean ± sample std (n - 1) over folds and seeds with the number of runs n (a single run
shows no spread); the gain over random init and the speed-up are paired per fold and seed (see
:mod:`sslunet.study.paired`); the share of the all-labels Dice (Chaitanya et al. 2020, "within
8% of the benchmark") is a ratio of means.
"""

from __future__ import annotations

import math
from collections import defaultdict
from statistics import mean, stdev
from typing import Callable, Iterable, Sequence

from sslunet.study.paired import (
    gain_cell, level_speedup_cell, paired_differences, paired_level_speedups, paired_speedups,
    speedup_cell,
)


# A run whose best pseudo-Dice stays below this never learned the task (e.g. it predicts only
# background); 95% of its own noise-level maximum is no convergence.
MIN_LEARNED = 0.05


def convergence_epoch(curve: Sequence[float], fraction: float = 0.95) -> int | None:
    """Index of the first value >= ``fraction`` x max(curve); None for an empty curve or one
    whose maximum stays below ``MIN_LEARNED`` (the run never learned).

    Epochs are 0-based, as in ``metrics.jsonl``; a run that is at its best from the first epoch
    converges at epoch 0.
    """
    values = [v for v in curve if v is not None and not math.isnan(v)]
    if not values or max(values) < MIN_LEARNED:
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
    return mean(vals), (stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def aggregate(rows: list[dict], metric: str = "dice_mean") -> dict:
    """``{(init, budget): (mean, std, n)}`` of ``metric`` over folds and seeds (finished runs)."""
    groups: dict[tuple, list] = defaultdict(list)
    for r in rows:
        if r.get("status") == "ok":
            groups[(r["init"], r["budget"])].append(r.get(metric))
    return {k: _stats(v) for k, v in groups.items()}


def fmt_mean(m, s, n, digits: int = 3, show_n: bool = True) -> str:
    """``0.712 ± 0.031 (n=3)``; a single run has no spread: ``0.712 (n=1)``."""
    if m is None or not n:
        return "n/a"
    text = f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if n > 1 and s is not None else "")
    return text + (f" (n={n})" if show_n else "")


_NONE = (None, None, 0)


def _grid(title: str, inits: list[str], budgets: list[str], cell: Callable[[str, str], str],
          note: str = "") -> list[str]:
    """Markdown lines of a table with one row per init and one column per budget."""
    lines = [f"### {title}", "", "| init | " + " | ".join(f"N={b}" for b in budgets) + " |",
             "|---|" + "---|" * len(budgets)]
    lines += [f"| {i} | " + " | ".join(cell(i, b) for b in budgets) + " |" for i in inits]
    return lines + (["", note] if note else []) + [""]


def markdown_table(rows: list[dict], inits: list[str], budgets: list[str],
                   metric: str = "dice_mean", baseline: str = "random") -> str:
    """Mean ± std of ``metric`` per init (rows) and label budget (columns); then the paired gain
    over ``baseline``, the share of the all-labels score, and the convergence epoch with the
    paired speed-up."""
    agg = aggregate(rows, metric)
    lines = _grid(f"{metric} (mean ± std over folds and seeds, n finished runs)", inits,
                  budgets, lambda i, b: fmt_mean(*agg.get((i, b), _NONE)),
                  "std: sample std (n - 1) of the runs; a single run has none.")
    compare = baseline in inits and len(inits) > 1
    if compare:
        lines += _gain_table(rows, inits, budgets, metric, baseline)
    lines += _share_tables(agg, inits, budgets, metric, baseline)
    lines += _convergence_tables(rows, inits, budgets, baseline if compare else None)
    return "\n".join(lines)


def _gain_table(rows, inits, budgets, metric, baseline) -> list[str]:
    others = [i for i in inits if i != baseline]
    return _grid(f"paired gain over {baseline} init ({metric})", others, budgets,
                 lambda i, b: gain_cell(paired_differences(rows, i, b, metric, baseline)),
                 f"Per pair of runs with the same fold and seed (the same labelled cases): "
                 f"init minus {baseline}; mean ± sample std (n - 1) over the pairs, and how "
                 f"many pairs gained (positive / pairs).")


def _ratio(agg: dict, num: tuple, den: tuple) -> str:
    a, b = agg.get(num, _NONE)[0], agg.get(den, _NONE)[0]
    return "n/a" if a is None or b is None or b <= 0 else f"{a / b:.2f}"


def _share_tables(agg, inits, budgets, metric, baseline) -> list[str]:
    """Mean at each budget over the mean at N=all: the same init's, and the baseline's."""
    if "all" not in budgets:
        return []
    title = f"share of the all-labels Dice ({metric}), relative to"
    lines, small = [], [b for b in budgets if b != "all"]
    if small:
        lines += _grid(f"{title} the same init at N=all", inits, small,
                       lambda i, b: _ratio(agg, (i, b), (i, "all")),
                       "Mean at N labelled volumes divided by the same init's mean at N=all.")
    if baseline in inits:
        lines += _grid(f"{title} {baseline} init at N=all", inits, budgets,
                       lambda i, b: _ratio(agg, (i, b), (baseline, "all")),
                       f"Mean at N divided by the {baseline} init's mean at N=all (the benchmark "
                       f"that Chaitanya et al. 2020 compare with: 0.92 = within 8%).")
    return lines


def _convergence_tables(rows, inits, budgets, baseline: str | None) -> list[str]:
    conv = aggregate(rows, "convergence_epoch")
    lines = _grid("convergence epoch (first epoch at 95% of the run's own max pseudo-Dice; "
                  "mean ± std, n runs)", inits, budgets,
                  lambda i, b: fmt_mean(*conv.get((i, b), _NONE), digits=1),
                  "Epochs count from 0.")
    if baseline is None:
        return lines
    return lines + _grid(
        f"convergence speed-up over {baseline} init (paired)",
        [i for i in inits if i != baseline], budgets,
        lambda i, b: speedup_cell(paired_speedups(rows, i, b, baseline)),
        f"Per pair of runs with the same fold and seed: (epoch_{baseline} + 1) / "
        f"(epoch_init + 1); mean ± sample std (n - 1) over the pairs, n pairs.") + _grid(
        f"speed-up to {baseline} init's quality (paired)",
        [i for i in inits if i != baseline], budgets,
        lambda i, b: level_speedup_cell(paired_level_speedups(rows, i, b, baseline)),
        f"Per pair: epochs {baseline} init needs to reach 95% of its best validation "
        f"pseudo-Dice, divided by the epochs the init needs to reach that same level (epochs "
        f"counted from 1); mean ± sample std over the pairs that reached it.")


def class_names(rows: list[dict], prefix: str = "") -> list[str]:
    """Classes with a ``{prefix}dice_<class>`` column, in first-seen order."""
    start, names = f"{prefix}dice_", []
    for r in rows:
        for k in r:
            name = k[len(start):]
            if k.startswith(start) and name != "mean" and name not in names:
                names.append(name)
    return names


def _finished_counts(rows: list[dict]) -> dict[tuple, int]:
    counts: dict[tuple, int] = defaultdict(int)
    for r in rows:
        if r.get("status") == "ok":
            counts[(r["init"], r["budget"])] += 1
    return counts


def _class_cell(stat: tuple, n_row: int) -> str:
    m, s, n = stat
    return fmt_mean(m, s, n, show_n=n != n_row)


def per_class_table(rows: list[dict], inits: list[str], budgets: list[str],
                    prefix: str = "") -> str:
    """Mean ± std Dice of every class, one row per (init, budget) with its number of runs n (a
    cell shows its own n only where a class has fewer values than the row has runs)."""
    classes = class_names(rows, prefix)
    if not classes:
        return ""
    stats = {c: aggregate(rows, f"{prefix}dice_{c}") for c in classes}
    counts = _finished_counts(rows)
    source = "test set" if prefix == "test_" else "fold validation cases"
    lines = [f"### Dice per class ({source}; mean ± std over the n finished runs of a row)", "",
             "| init | N | n | " + " | ".join(classes) + " |",
             "|---|---|---|" + "---|" * len(classes)]
    for init in inits:
        for b in budgets:
            n = counts.get((init, b), 0)
            if not n:
                continue
            cells = [_class_cell(stats[c].get((init, b), _NONE), n) for c in classes]
            lines.append(f"| {init} | {b} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
