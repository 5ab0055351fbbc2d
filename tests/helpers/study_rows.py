"""Hand-built study rows for the study.md statistics tests: their expected numbers are worked
out by hand in the tests, not with the code under test."""

from __future__ import annotations

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


def hand_rows() -> list[dict]:
    rows = [{"init": i, "budget": b, "n_labeled": 2 if b == "2" else 8, "fold": "0", "seed": s,
             "status": "ok", "dice_mean": d, "convergence_epoch": e}
            for (i, b, s), (d, e) in RUNS.items()]
    return rows[::-1]  # pairing must not depend on the order of the rows


def table_cell(md: str, title: str, init: str) -> list[str]:
    """The cells of ``init``'s row in the table whose heading contains ``title``."""
    section = md.split(title, 1)[1].split("###", 1)[0]
    line = next(ln for ln in section.splitlines() if ln.startswith(f"| {init} |"))
    return [c.strip() for c in line.strip("|").split("|")][1:]
