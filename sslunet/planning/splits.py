"""Cross-validation splits over the labelled cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sslunet.errors import InputError
from sslunet.utils.atomic import read_json

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
