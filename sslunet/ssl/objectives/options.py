"""How an objective's options describe and check themselves.

An objective's ``Options`` is a frozen dataclass whose fields are declared with :func:`option`:
next to the default, the field's metadata holds a one-line help, the accepted choices and an
argparse ``type=`` function (from :mod:`sslunet.utils.argtypes`). ``sslunet_pretrain`` builds
its objective flags (``--field-name``) from these descriptions, so adding an objective never
means editing the command line.

Errors name options by their field names (:class:`OptionValueError` from ``__post_init__``,
:class:`OptionError` for the user); :meth:`OptionError.describe` lets a command line spell
them as its flags instead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from sslunet.errors import InputError

HELP, PARSE, CHOICES, DEFAULT_TEXT = "help", "parse", "choices", "default_text"


def option(default: Any, help: str, parse: Callable[[str], Any] | None = None,
           choices: Sequence[str] | None = None, default_text: str | None = None):
    """A field of an objective's options dataclass, described for the command line.

    Args:
        default: the default value (immutable: options are frozen).
        help: what the option does, one line, without the default (it is added from
            ``default``).
        parse: argparse ``type=`` turning the command-line text into the value (None: text).
        choices: the accepted values, for text options.
        default_text: what the default means, where ``default`` is None ("patch // 8").
    """
    metadata = {HELP: help, PARSE: parse, CHOICES: tuple(choices) if choices else None,
                DEFAULT_TEXT: default_text}
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class OptionSpec:
    """One option as :func:`option` described it; ``default_text`` is the default, readable."""

    name: str
    default: Any
    help: str
    parse: Callable[[str], Any] | None
    choices: tuple[str, ...] | None
    default_text: str


def format_default(value: Any) -> str:
    """A default as a command line would give it (tuples as ``N,N,N``)."""
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def option_specs(options_cls: type) -> list[OptionSpec]:
    """The described options of an options dataclass, in field order.

    Raises:
        TypeError: a field without help, or with a None default that ``default_text`` does not
            explain (every option must be describable on the command line).
    """
    specs = []
    for f in dataclasses.fields(options_cls):
        meta = f.metadata
        text = meta.get(DEFAULT_TEXT) or (None if f.default is None else format_default(f.default))
        if not meta.get(HELP) or text is None:
            raise TypeError(f"{options_cls.__name__}.{f.name} must be declared with option(..., "
                            "help=...), and default_text= when its default is None")
        specs.append(OptionSpec(f.name, f.default, meta[HELP], meta.get(PARSE), meta.get(CHOICES),
                                text))
    return specs


class OptionValueError(ValueError):
    """An option value out of its range, raised by an options dataclass's ``__post_init__``."""

    def __init__(self, option_name: str, problem: str):
        self.option, self.problem = option_name, problem
        super().__init__(f"{option_name} {problem}")


def require(ok: bool, option_name: str, problem: str) -> None:
    """Raise :class:`OptionValueError` ``"<option> <problem>"`` unless ``ok``."""
    if not ok:
        raise OptionValueError(option_name, problem)


def check_choices(options: object) -> None:
    """Refuse a text option outside the ``choices`` its field declares."""
    for f in dataclasses.fields(options):
        allowed = f.metadata.get(CHOICES)
        value = getattr(options, f.name)
        if allowed and value not in allowed:
            listed = allowed[0] if len(allowed) == 1 else \
                f"{', '.join(allowed[:-1])} or {allowed[-1]}"
            raise OptionValueError(f.name, f"must be {listed}, got {value!r}")


class OptionError(InputError):
    """An objective option the user got wrong, named by its field.

    Args:
        objective: the objective's name.
        option_name: the option's field name (None: the problem names no single option).
        problem: what is wrong, following the option's name ("must be > 0, got -1").
    """

    def __init__(self, objective: str, option_name: str | None, problem: str):
        self.objective, self.option, self.problem = objective, option_name, problem
        super().__init__(self.describe())

    def describe(self, spell: Callable[[str], str] = str) -> str:
        """The message with every option name written as ``spell(name)`` (a CLI: its flag)."""
        name = f"{spell(self.option)} " if self.option else ""
        return f"invalid option for objective '{self.objective}': {name}{self.problem}"


class OptionNotApplicable(OptionError):
    """An option given to an objective that does not have it."""

    def __init__(self, objective: str, option_name: str, known: Sequence[str]):
        self.known = tuple(known)
        super().__init__(objective, option_name, "does not apply")

    def describe(self, spell: Callable[[str], str] = str) -> str:
        accepted = ", ".join(spell(k) for k in self.known) or "none"
        return (f"option {spell(self.option)} does not apply to objective '{self.objective}' "
                f"(its options: {accepted})")


def parse_options(objective: str, options_cls: type, raw: dict) -> object:
    """Build an objective's frozen options dataclass from ``{field: value}``.

    Args:
        objective: objective name, for messages.
        options_cls: the objective's ``Options`` dataclass.
        raw: user-given values (CLI flags that were set); missing fields keep their defaults.

    Raises:
        OptionError: an option that the objective does not have (:class:`OptionNotApplicable`),
            or an invalid value.
    """
    known = sorted(f.name for f in dataclasses.fields(options_cls))
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise OptionNotApplicable(objective, unknown[0], known)
    try:
        return options_cls(**raw)
    except OptionValueError as e:
        raise OptionError(objective, e.option, e.problem) from None
    except (TypeError, ValueError) as e:
        raise OptionError(objective, None, str(e)) from None


def per_axis(objective: str, field_name: str, value: Sequence[int], ndim: int) -> tuple[int, ...]:
    """An option given as ``N`` (every axis) or one entry per spatial axis, as ``ndim`` ints."""
    value = tuple(value) * ndim if len(value) == 1 else tuple(value)
    if len(value) != ndim:
        raise OptionError(objective, field_name, f"needs 1 or {ndim} entries, got {value}")
    return tuple(int(v) for v in value)
