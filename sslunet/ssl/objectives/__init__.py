"""Self-supervised pretraining objectives, looked up by name (``sslunet_pretrain -l NAME``).

Every module of this package except the framework ones (``base``, ``options``, ``registry``)
and private ones (``_name``) defines and registers objectives; they are imported here in name
order, so adding an objective means adding its module (and its test), nothing else.
"""

import importlib
import pkgutil

from sslunet.ssl.objectives.base import PretrainObjective, PretrainSetup, Stage
from sslunet.ssl.objectives.registry import (
    OBJECTIVES, get_objective, list_objectives, register_objective,
)

FRAMEWORK_MODULES = ("base", "options", "registry")
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if not _module.startswith("_") and _module not in FRAMEWORK_MODULES:
        importlib.import_module(f"{__name__}.{_module}")

__all__ = [
    "OBJECTIVES",
    "PretrainObjective",
    "PretrainSetup",
    "Stage",
    "get_objective",
    "list_objectives",
    "register_objective",
]
