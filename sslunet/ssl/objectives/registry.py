"""Named registry of self-supervised pretraining objectives.

An objective is a :class:`~sslunet.ssl.objectives.base.PretrainObjective` subclass (an
``nn.Module`` wrapping the network, its heads and its loss). Objectives register explicitly:
``sslunet/ssl/objectives/__init__.py`` imports every objective module, nothing is discovered
by crawling the package folder.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from torch import nn

from sslunet.errors import InputError

OBJECTIVES: dict[str, type[nn.Module]] = {}

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

    def decorator(cls: T) -> T:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(f"objective '{name}': {cls!r} is not an nn.Module subclass")
        if name in OBJECTIVES and OBJECTIVES[name] is not cls:
            raise ValueError(
                f"objective name '{name}' is already registered to {OBJECTIVES[name].__name__}"
            )
        cls.name = name
        OBJECTIVES[name] = cls
        return cls

    return decorator


def list_objectives() -> list[str]:
    """Registered objective names, sorted."""
    return sorted(OBJECTIVES)


def get_objective(name: str) -> type[nn.Module]:
    """The objective class registered under ``name``.

    Raises:
        InputError: no objective has that name (the message lists the known ones).
    """
    if name not in OBJECTIVES:
        raise InputError(
            f"unknown pretraining objective '{name}'; known objectives: "
            f"{', '.join(list_objectives()) or '(none)'}"
        )
    return OBJECTIVES[name]
