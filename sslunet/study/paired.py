"""Paired comparisons of an init with the baseline (random) init.

For a given fold and seed every init is fine-tuned on the same labelled cases, so the difference
between an init's run and the baseline's run of the same fold and seed does not contain the
variance of which cases were labelled (large at a budget of a few volumes). The study therefore
compares per pair and summarises the pairs: mean, sample standard deviation (n - 1; none for a
single pair), and how many pairs gained.
"""

from __future__ import annotations

import math
from statistics import mean, stdev
from typing import Sequence


def _finite(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _values(rows: list[dict], init: str, budget: str, metric: str) -> dict[tuple, float]:
    """``{(fold, seed): metric}`` of the finished runs of ``init`` at ``budget``."""
    return {(str(r.get("fold")), str(r.get("seed"))): r[metric] for r in rows
            if r["init"] == init and r["budget"] == budget and r.get("status") == "ok"
            and _finite(r.get(metric))}


def paired_values(rows: list[dict], init: str, budget: str, metric: str,
                  baseline: str = "random") -> list[tuple[float, float]]:
    """``(init value, baseline value)`` for every fold and seed where both runs have a value."""
    mine, base = _values(rows, init, budget, metric), _values(rows, baseline, budget, metric)
    return [(v, base[k]) for k, v in mine.items() if k in base]


def paired_differences(rows: list[dict], init: str, budget: str, metric: str,
                       baseline: str = "random") -> list[float]:
    """``init - baseline`` of ``metric`` per pair of runs with the same fold and seed."""
    return [a - b for a, b in paired_values(rows, init, budget, metric, baseline)]


def paired_speedups(rows: list[dict], init: str, budget: str,
                    baseline: str = "random") -> list[float]:
    """``(epoch_baseline + 1) / (epoch_init + 1)`` of the convergence epoch per pair (epochs are
    0-based, so ``+ 1`` counts the epochs trained until convergence)."""
    pairs = paired_values(rows, init, budget, "convergence_epoch", baseline)
    return [(b + 1) / (a + 1) for a, b in pairs]


def summary(values: Sequence[float]) -> tuple[float | None, float | None, int]:
    """Mean, sample std (None for fewer than two values) and count."""
    if not values:
        return None, None, 0
    return mean(values), (stdev(values) if len(values) > 1 else None), len(values)


def _cell(values: Sequence[float], mean_fmt: str, std_fmt: str, unit: str, tail) -> str:
    """``<mean><unit> ± <std> (<tail(n)>)``; no spread for a single value; n/a for none."""
    m, s, n = summary(values)
    if m is None:
        return "n/a"
    spread = "" if s is None else f" ± {s:{std_fmt}}"
    return f"{m:{mean_fmt}}{unit}{spread} ({tail(n)})"


def gain_cell(diffs: Sequence[float]) -> str:
    """``+0.052 ± 0.020 (3/3 > 0)``; one pair has no spread: ``+0.052 (1/1 > 0)``."""
    return _cell(diffs, "+.3f", ".3f", "", lambda n: f"{sum(d > 0 for d in diffs)}/{n} > 0")


def speedup_cell(ratios: Sequence[float]) -> str:
    """``2.00x ± 0.15 (n=3)``; one pair: ``2.00x (n=1)``."""
    return _cell(ratios, ".2f", ".2f", "x", lambda n: f"n={n}")


def first_epoch_at(curve: Sequence, level: float) -> int | None:
    """0-based index of the first finite value >= ``level``; None if the curve never gets there."""
    return next((i for i, v in enumerate(curve) if _finite(v) and v >= level), None)


def paired_level_speedups(rows: list[dict], init: str, budget: str, baseline: str = "random",
                          fraction: float = 0.95) -> list[float | None]:
    """Speed-up to the baseline's quality, per pair of runs with the same fold and seed.

    The level is ``fraction`` x the baseline run's best validation pseudo-Dice; the speed-up is
    ``(epochs the baseline needs to reach it) / (epochs the init needs)``, epochs counted from
    1. Unlike the own-maximum criterion, a pretrained run that keeps improving past the
    baseline is not penalised for it. None: the init never reached the level.
    """
    curves = {init: {}, baseline: {}}
    for r in rows:
        if r["init"] in curves and r["budget"] == budget and r.get("status") == "ok":
            curves[r["init"]][(str(r.get("fold")), str(r.get("seed")))] = \
                r.get("pseudo_dice_curve") or []
    out: list[float | None] = []
    for key, base in curves[baseline].items():
        values = [v for v in base if _finite(v)]
        if key not in curves[init] or not values or max(values) <= 0:
            continue
        level = fraction * max(values)
        e_base, e_init = first_epoch_at(base, level), first_epoch_at(curves[init][key], level)
        out.append(None if e_init is None else (e_base + 1) / (e_init + 1))
    return out


def level_speedup_cell(ratios: Sequence[float | None]) -> str:
    """``2.00x ± 0.15 (3/3 reached)``: mean over the pairs whose init reached the level."""
    reached = [r for r in ratios if r is not None]
    if ratios and not reached:
        return f"never (0/{len(ratios)} reached)"
    return _cell(reached, ".2f", ".2f", "x", lambda n: f"{n}/{len(ratios)} reached")
