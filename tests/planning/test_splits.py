"""Tests for sslunet.planning.splits: cross-validation folds and the labelled-case budget."""

from __future__ import annotations

import pytest

from sslunet.errors import InputError
from sslunet.planning.splits import choose_labeled


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
