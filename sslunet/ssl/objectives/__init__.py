"""Self-supervised pretraining objectives, looked up by name (``sslunet_pretrain -l NAME``).

Every objective module is imported here explicitly so that it registers itself.
"""

from sslunet.ssl.objectives.registry import (
    OBJECTIVES, get_objective, list_objectives, register_objective,
)
from sslunet.ssl.objectives.base import PretrainObjective, PretrainSetup, Stage
from sslunet.ssl.objectives import (  # noqa: F401  (each registers one objective)
    contrastive, genesis, mae, refs, regression, simclr,
)

__all__ = [
    "OBJECTIVES",
    "PretrainObjective",
    "PretrainSetup",
    "Stage",
    "get_objective",
    "list_objectives",
    "register_objective",
]
