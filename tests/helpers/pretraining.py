"""What the pretraining tests share: the stack dataset's configurations, an objective's setup
on it, an objective's first batch, and a stand-in objective with given options."""

from __future__ import annotations

import dataclasses

from sslunet.paths import Paths
from sslunet.plans import Plans
from sslunet.preprocessing.storage import list_cases
from sslunet.ssl.objectives import PretrainSetup
from tests.helpers.datasets import STACK_PATCHES

CONFIGS = tuple(STACK_PATCHES)  # the stack dataset's configurations: 2d, 3d_fullres


def make_setup(paths: Paths, plans: Plans, config: str, seed: int = 0) -> PretrainSetup:
    c = plans.configurations[config]
    folder = paths.preprocessed / plans.dataset_name / c.data_identifier
    return PretrainSetup(plans.dataset_name, plans, c, folder, paths, seed)


def first_batch(objective, batch_size: int = 4, seed: int = 0) -> dict:
    stream = objective.make_stream(list_cases(objective.setup.folder), batch_size, seed, True,
                                   0, False)
    batch = next(stream)
    stream.close()
    return batch


def fake_objective(**fields) -> type:
    """A stand-in objective class whose ``Options`` dataclass has ``fields`` (float-typed,
    ``name=default``); the defaults may be ``option(...)`` descriptions or plain values."""
    options = dataclasses.make_dataclass("FakeOptions", [(k, float, v) for k, v in fields.items()],
                                         frozen=True)
    return type("Fake", (), {"Options": options})
