"""Named registry of self-supervised pretraining objectives.

An objective is a :class:`~sslunet.ssl.objectives.base.PretrainObjective` subclass (an
``nn.Module`` wrapping the network, its heads and its loss). Each registers itself with
:func:`register_objective` when its module is imported; ``sslunet/ssl/objectives/__init__.py``
imports every objective module of the package (and only those).
"""

from __future__ import annotations

from typing import Callable, TypeVar

from torch import nn

from sslunet.utils.registry import ModuleRegistry

def _set_name(name: str, cls: type) -> None:
    cls.name = name


_REGISTRY = ModuleRegistry("objective", "objectives", label="pretraining objective",
                           on_register=_set_name)
OBJECTIVES: dict[str, type[nn.Module]] = _REGISTRY.entries
T = TypeVar("T", bound=type)


def register_objective(name: str) -> Callable[[T], T]:
    """Class decorator: make an objective available to ``sslunet_pretrain -l name``.

    Args:
        name: registry key; also the folder name part and the ``--init`` value of fine-tuning.

    Returns:
        The decorator; it sets ``cls.name`` and returns the class.

    Raises:
        ValueError: ``name`` is taken by another class, or is not a plain identifier.
        TypeError: the class is not an ``nn.Module`` subclass.
    """
    if not name or not name.replace("_", "").isalnum() or name == "random":
        raise ValueError(f"objective name {name!r} must be a plain identifier other than 'random'")
    return _REGISTRY.register(name)


def list_objectives() -> list[str]:
    """Registered objective names, sorted."""
    return _REGISTRY.names()


def get_objective(name: str) -> type[nn.Module]:
    """The objective class registered under ``name`` (InputError listing the known ones)."""
    return _REGISTRY.get(name)
