"""Fixtures shared by the whole suite, and the ``realdata`` marker's skip.

The datasets behind these fixtures are written by :mod:`tests.helpers.datasets` (see its
docstring for what a synthetic case looks like and for the conventions: ``shape`` in numpy
order (z, y, x), ``spacing``/``origin``/``direction`` in SimpleITK order (x, y, z)).

Markers (declared in ``pyproject.toml``): ``realdata`` tests need ``../shared/data`` and are
skipped here when it is absent; ``slow`` tests are end-to-end runs or take more than a few
seconds, ``-m "not slow"`` leaves them out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from sslunet.planning.planner import plan_experiment
from sslunet.plans import Fingerprint, Plans
from tests.helpers.datasets import (
    make_case,
    oblique_direction,
    stack_home,
    write_image,
    write_raw_dataset,
)
from tests.helpers.fingerprints import SCENARIOS
from tests.helpers.patches import write_patch_cases
from tests.helpers.paths import REAL_DATA


def pytest_collection_modifyitems(config, items):
    if REAL_DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"real datasets not available at {REAL_DATA}")
    for item in items:
        if "realdata" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def raw_dataset(tmp_path) -> Callable[..., Path]:
    """Factory: ``raw_dataset(**kwargs)`` writes a dataset under ``tmp_path/raw`` (see
    :func:`~tests.helpers.datasets.write_raw_dataset` for the keywords) and returns its folder."""
    def make(**kwargs) -> Path:
        return write_raw_dataset(tmp_path / "raw", **kwargs)

    return make


@pytest.fixture
def synthetic_case() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """The :func:`~tests.helpers.datasets.make_case` function:
    ``synthetic_case(shape, n_channels, labels, seed)``."""
    return make_case


@pytest.fixture
def sitk_image_writer() -> Callable[..., Path]:
    """The :func:`~tests.helpers.datasets.write_image` function, for tests that build odd raw
    files by hand."""
    return write_image


@pytest.fixture
def oblique() -> Callable[..., tuple[float, ...]]:
    """The :func:`~tests.helpers.datasets.oblique_direction` function."""
    return oblique_direction


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module of tiny-tensor tests: extra OpenMP threads only add
    contention on a busy 2-core runner (several x slower). Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """``(paths, plans)`` of the stack dataset for the pretraining objectives (planned, plans
    shrunk; see :func:`~tests.helpers.datasets.stack_home`), a private copy per test module."""
    return stack_home(tmp_path_factory, tmp_path_factory.mktemp("stack") / "home")


@pytest.fixture(scope="module")
def planned() -> dict[str, tuple[Fingerprint, Plans]]:
    """``scenario -> (fingerprint, plans)``: every hand-built fingerprint of
    :data:`~tests.helpers.fingerprints.SCENARIOS`, planned with the default planner."""
    out = {}
    for name, make in SCENARIOS.items():
        fp = make()
        out[name] = (fp, plan_experiment(fp))
    return out


@pytest.fixture(scope="module")
def planned_resenc() -> dict[tuple[str, str], tuple[Fingerprint, Plans]]:
    """``(scenario, preset) -> (fingerprint, plans)``: every hand-built fingerprint planned with
    the residual-encoder presets ``resenc_m`` and ``resenc_l``."""
    out = {}
    for name, make in SCENARIOS.items():
        fp = make()
        for preset in ("resenc_m", "resenc_l"):
            out[name, preset] = (fp, plan_experiment(fp, preset=preset))
    return out


@pytest.fixture
def cases(tmp_path) -> Path:
    """A folder of preprocessed cases for patch sampling and batch loading: three labelled
    cases of different size (one smaller than the patches) and one unlabeled (see
    :func:`~tests.helpers.patches.write_patch_cases`)."""
    return write_patch_cases(tmp_path)
