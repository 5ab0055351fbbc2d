"""Tests for sslunet.planning.splits: cross-validation folds and the labelled-case budget."""

from __future__ import annotations

import pytest

from sslunet.errors import InputError
from sslunet.planning.splits import choose_labeled, make_splits


def test_splits_five_disjoint_folds_cover_all_cases():
    ids = [f"case_{i:03d}" for i in range(23)]
    splits = make_splits(ids)
    assert len(splits) == 5
    vals = [set(s["val"]) for s in splits]
    assert set().union(*vals) == set(ids)
    assert sum(len(v) for v in vals) == len(ids)  # disjoint
    assert sorted(len(v) for v in vals) == [4, 4, 5, 5, 5]
    for s in splits:
        assert set(s["train"]) == set(ids) - set(s["val"])


def test_splits_seeded_and_order_independent():
    ids = [f"c{i}" for i in range(20)]
    assert make_splits(ids, seed=3) == make_splits(list(reversed(ids)), seed=3)
    assert make_splits(ids, seed=3) != make_splits(ids, seed=4)


def test_splits_with_fewer_cases_than_folds():
    splits = make_splits(["a", "b", "c"])
    assert len(splits) == 3
    assert sorted(v for s in splits for v in s["val"]) == ["a", "b", "c"]
    assert all(len(s["val"]) == 1 and len(s["train"]) == 2 for s in splits)
    assert make_splits(["only"]) == [{"train": ["only"], "val": ["only"]}]
    assert make_splits([]) == []


def test_choose_labeled_deterministic_nested_and_seed_dependent():
    ids = [f"c{i:02d}" for i in range(20)]
    assert choose_labeled(ids, 5, 3) == choose_labeled(list(reversed(ids)), 5, 3)
    for seed in range(5):
        small, big = choose_labeled(ids, 2, seed), choose_labeled(ids, 3, seed)
        assert set(small) < set(big) and len(big) == 3
    draws = {tuple(choose_labeled(ids, 5, seed)) for seed in range(5)}
    assert len(draws) >= 4
    assert choose_labeled(ids, None, 0) == ids and choose_labeled(ids, 20, 0) == ids
    with pytest.raises(InputError, match="exceeds the 20"):
        choose_labeled(ids, 21, 0)
    with pytest.raises(InputError):
        choose_labeled(ids, 0, 0)
