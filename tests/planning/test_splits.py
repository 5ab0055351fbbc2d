"""Tests for sslunet.planning.splits: cross-validation folds and the labelled-case budget."""

from __future__ import annotations

import pytest

from sslunet.errors import InputError
from sslunet.planning.splits import (
    budget_tag, choose_labeled, choose_labeled_slices, make_splits, parse_budget,
)


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


def test_labeled_slices_spread_evenly_inside_each_extent_and_seeded():
    extents = {"a": (2, 11), "b": (0, 4), "c": (5, 5)}
    slices = choose_labeled_slices(extents, 7, seed=0)
    assert [len(slices[c]) for c in "abc"] == [3, 3, 1]  # dealt in turn; 'c' has one slice
    for case, (lo, hi) in extents.items():
        assert all(lo <= s <= hi for s in slices[case])
        assert len(set(slices[case])) == len(slices[case])
    assert slices == choose_labeled_slices(extents, 7, seed=0)
    assert any(choose_labeled_slices(extents, 7, seed=s) != slices for s in range(1, 5))
    with pytest.raises(InputError, match="fewer than the 3"):
        choose_labeled_slices(extents, 2, seed=0)
    with pytest.raises(InputError, match="only 1 slice"):
        choose_labeled_slices({"c": (5, 5)}, 2, seed=0)


@pytest.mark.parametrize("tag, parsed", [("2", (2, None)), ("all", (None, None)),
                                         ("20sl10", (10, 20)), ("5slall", (None, 5))])
def test_budget_names_round_trip(tag, parsed):
    assert parse_budget(tag) == parsed and budget_tag(*parsed) == tag


@pytest.mark.parametrize("bad", ["0", "x", "sl2", "0sl2", "2sl0", "-1", "2slx"])
def test_bad_budget_names_are_refused(bad):
    with pytest.raises(ValueError):
        parse_budget(bad)
