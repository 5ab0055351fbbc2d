"""Tests for sslunet.training.schedule: the poly learning rate and its linear warm-up."""

from __future__ import annotations

import numpy as np
import pytest

from sslunet.training.schedule import learning_rate


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_poly_schedule_values():
    assert learning_rate(0, 100, 0.01) == pytest.approx(0.01)
    assert learning_rate(50, 100, 0.01) == pytest.approx(0.01 * 0.5 ** 0.9)
    assert learning_rate(99, 100, 0.01) == pytest.approx(0.01 * 0.01 ** 0.9)
    assert learning_rate(100, 100, 0.01) == 0.0
    assert learning_rate(150, 100, 0.01) == 0.0
    assert learning_rate(30, 100, 1.0, exponent=2.0) == pytest.approx(0.7 ** 2)


def test_warmup_is_linear_then_poly_over_the_remaining_steps():
    lrs = [learning_rate(s, 110, 0.1, warmup_steps=10) for s in range(110)]
    assert np.allclose(lrs[:10], [0.1 * (s + 1) / 10 for s in range(10)])
    assert np.allclose(np.diff(lrs[:10]), 0.01)
    # continuity at the boundary: warm-up ends at base_lr, and decay starts from base_lr
    assert lrs[9] == pytest.approx(0.1) and lrs[10] == pytest.approx(0.1)
    assert lrs[60] == pytest.approx(0.1 * (1 - 50 / 100) ** 0.9)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
