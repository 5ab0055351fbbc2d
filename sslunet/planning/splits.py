"""Cross-validation splits over the labelled cases."""

from __future__ import annotations

import numpy as np

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
