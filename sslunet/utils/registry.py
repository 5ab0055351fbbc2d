"""A named registry of ``nn.Module`` classes (networks, pretraining objectives).

Classes register explicitly with a decorator (the package ``__init__`` imports their modules);
nothing is discovered by crawling folders. Plans and checkpoints store the registry key.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from torch import nn

from sslunet.errors import InputError

T = TypeVar("T", bound=type)


class ModuleRegistry:
    """``name -> nn.Module subclass``, with checks at registration and a helpful lookup error.

    Args:
        kind: what is registered, in messages ("network", "objective").
        plural: plural of ``kind`` for the list of known names.
        label: how an unknown name is described ("unknown <label> 'x'"); default ``kind``.
        check: extra validation of a class being registered (raise TypeError/ValueError).
        on_register: called with ``(name, cls)`` after a successful registration.
    """

    def __init__(self, kind: str, plural: str, label: str | None = None,
                 check: Callable[[str, type], None] | None = None,
                 on_register: Callable[[str, type], None] | None = None):
        self.kind, self.plural, self.label = kind, plural, label or kind
        self.check, self.on_register = check, on_register
        self.entries: dict[str, type[nn.Module]] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator registering the class under ``name`` (returned unchanged)."""

        def decorator(cls: T) -> T:
            if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
                raise TypeError(f"{self.kind} '{name}': {cls!r} is not an nn.Module subclass")
            if self.check is not None:
                self.check(name, cls)
            if name in self.entries and self.entries[name] is not cls:
                raise ValueError(f"{self.kind} name '{name}' is already registered to "
                                 f"{self.entries[name].__name__}")
            if self.on_register is not None:
                self.on_register(name, cls)
            self.entries[name] = cls
            return cls

        return decorator

    def names(self) -> list[str]:
        return sorted(self.entries)

    def get(self, name: str) -> type[nn.Module]:
        """The class registered under ``name``; InputError listing the known names if none."""
        if name not in self.entries:
            raise InputError(f"unknown {self.label} '{name}'; known {self.plural}: "
                             f"{', '.join(self.names()) or '(none)'}")
        return self.entries[name]
