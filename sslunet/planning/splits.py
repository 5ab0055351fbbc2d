"""Cross-validation splits over the labelled cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sslunet.errors import InputError
from sslunet.utils.atomic import read_json

SLICES_INFIX = "sl"  # sparse label budgets are named <slices>sl<volumes|all> (budget_tag)

SPLIT_SEED = 12345


def make_splits(case_ids: list[str], num_folds: int = 5, seed: int = SPLIT_SEED) -> list[dict]:
    """Seeded k-fold splits: ``[{"train": [...], "val": [...]}, ...]``.

    With fewer cases than folds there are as many folds as cases (leave-one-out). A single
    labelled case gets one fold that trains and validates on it: nothing else is possible, and
    the validation score then only shows that training ran.
    """
    ids = sorted(case_ids)
    if len(ids) == 0:
        return []
    if len(ids) == 1:
        return [{"train": ids, "val": ids}]
    k = min(num_folds, len(ids))
    order = np.random.default_rng(seed).permutation(len(ids))
    chunks = np.array_split(order, k)
    splits = []
    for f in range(k):
        val = sorted(ids[i] for i in chunks[f])
        train = sorted(i for i in ids if i not in set(val))
        splits.append({"train": train, "val": val})
    return splits


def fold_cases(pre_dir: Path, fold: int | str) -> tuple[list[str], list[str]]:
    """(train, val) case ids of a fold; ``"all"`` trains and validates on every labelled case."""
    splits = read_json(pre_dir / "splits.json")
    if fold == "all":
        ids = sorted({i for s in splits for i in s["train"] + s["val"]})
        return ids, ids
    k = int(fold)
    if not 0 <= k < len(splits):
        raise InputError(f"fold {k} does not exist (splits.json has folds 0..{len(splits) - 1})",
                         pre_dir / "splits.json")
    return list(splits[k]["train"]), list(splits[k]["val"])


def choose_labeled(train_ids: list[str], n: int | None, seed: int) -> list[str]:
    """``n`` cases drawn deterministically from ``train_ids`` (same n and seed, same cases).

    The draw is a seeded permutation of the sorted ids, truncated: a larger ``n`` keeps the cases
    of a smaller one (nested subsets), so label-budget curves compare like with like.
    """
    ids = sorted(train_ids)
    if n is None or n >= len(ids):
        if n is not None and n > len(ids):
            raise InputError(f"--num-labeled {n} exceeds the {len(ids)} training cases of this "
                             "fold")
        return ids
    if n < 1:
        raise InputError("--num-labeled must be >= 1")
    order = np.random.default_rng([seed, 7919]).permutation(len(ids))
    return sorted(ids[i] for i in order[:n])


def choose_labeled_slices(extents: dict[str, tuple[int, int]], num_slices: int,
                          seed: int) -> dict[str, list[int]]:
    """A sparse-annotation budget: ``num_slices`` slices spread over the cases of ``extents``.

    ``extents`` maps each labelled case to the first and last slice (first axis of the
    preprocessed array) that shows foreground, where an annotator would place slices through
    the structures. Slices are dealt to the cases in turn (sorted order), a case that has no
    slice left being skipped, so the counts differ by at most one where extents allow; within
    a case they are evenly spaced over its extent with a seeded offset. Deterministic.
    """
    cases = sorted(extents)
    if num_slices < len(cases):
        raise InputError(f"--labeled-slices {num_slices} is fewer than the {len(cases)} labelled "
                         "volume(s) it is spread over; label fewer volumes or more slices")
    room = {c: extents[c][1] - extents[c][0] + 1 for c in cases}
    if num_slices > sum(room.values()):
        raise InputError(f"--labeled-slices {num_slices}: the {len(cases)} labelled volume(s) "
                         f"have only {sum(room.values())} slice(s) showing foreground")
    counts = dict.fromkeys(cases, 0)
    while sum(counts.values()) < num_slices:
        for case in cases:
            if counts[case] < room[case] and sum(counts.values()) < num_slices:
                counts[case] += 1
    out = {}
    for i, case in enumerate(cases):
        lo, k, n = extents[case][0], counts[case], room[case]
        u = np.random.default_rng([seed, 104729, i]).random()
        out[case] = [lo + int((j + u) * n / k) for j in range(k)]  # strictly increasing: n/k >= 1
    return out

def budget_tag(num_labeled: int | None, labeled_slices: int | None = None) -> str:
    """A label budget as a name: ``2``, ``all``; a sparse one ``20sl10`` (20 slices over 10
    volumes) or ``20slall``."""
    n = "all" if num_labeled is None else str(num_labeled)
    return n if labeled_slices is None else f"{labeled_slices}{SLICES_INFIX}{n}"


def parse_budget(tag: str) -> tuple[int | None, int | None]:
    """:func:`budget_tag`'s inverse: ``(volumes, or None for all; slices, or None for whole
    volumes)``. ValueError for anything else."""
    slices = None
    if SLICES_INFIX in tag:
        head, tag = tag.split(SLICES_INFIX, 1)
        slices = int(head)
    n = None if tag == "all" else int(tag)
    if (n is not None and n < 1) or (slices is not None and slices < 1):
        raise ValueError(f"budget {tag!r}: counts must be >= 1")
    return n, slices
