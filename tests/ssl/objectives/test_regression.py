"""Tests for sslunet.ssl.objectives.regression (context restoration),
on the stack dataset of :mod:`tests.helpers.datasets` (fixture ``tiny``)."""

from __future__ import annotations

import numpy as np
import pytest

from sslunet.errors import InputError
from sslunet.ssl.objectives import get_objective
from tests.helpers.pretraining import first_batch, make_setup


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_regression_swaps_keep_each_image_histogram(tiny):
    paths, plans = tiny
    obj = get_objective("regression").create(make_setup(paths, plans, "2d"),
                                             {"num_swaps": 3, "swap_size": (4,)})
    assert obj.hyperparameters()["swap_size"] == [4, 4]
    batch = first_batch(obj)
    data, target = batch["data"].numpy(), batch["target"].numpy()
    for x, y in zip(data, target):
        assert not np.array_equal(x, y)
        np.testing.assert_array_equal(np.sort(x, axis=None), np.sort(y, axis=None))
        assert (x != y).sum() <= 2 * 3 * 4 * 4  # only the swapped boxes change


def test_default_swap_boxes_are_isotropic_in_mm(tiny):
    paths, plans = tiny
    setup = make_setup(paths, plans, "3d_fullres")
    obj = get_objective("regression").create(setup)
    # spacing (3, 1, 1) mm: 5 voxels in-plane, 5 mm / 3 mm -> 2 slices; 1.36 % of 4x24x24
    assert obj.swap_size == (2, 5, 5) and obj.num_swaps == 1
    with pytest.raises(InputError, match="do not fit"):  # 2 x 20 x 50 voxels > 25 % of 2304
        get_objective("regression").create(setup, {"num_swaps": 20})
