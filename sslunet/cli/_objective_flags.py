"""``sslunet_pretrain``'s objective flags, made from the registered objectives' options.

Every field of an objective's ``Options`` (declared with
:func:`sslunet.ssl.objectives.options.option`) becomes the flag ``--field-name``, with the
field's help, choices and ``type=``, and its default read from the dataclass. A field that
several objectives have (``--temperature``) is declared once, so those objectives must parse it
alike. Only the flags that were given are passed on: the chosen objective fills in the rest.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Mapping

from sslunet.ssl.objectives.options import OptionSpec, option_specs


def flag_name(option: str) -> str:
    """The flag of an option: ``local_level`` -> ``--local-level``."""
    return "--" + option.replace("_", "-")


@dataclass(frozen=True)
class ObjectiveFlag:
    """One flag and the objectives that have its option, each with its own description."""

    uses: tuple[tuple[str, OptionSpec], ...]  # (objective, spec), objectives sorted

    @property
    def spec(self) -> OptionSpec:
        return self.uses[0][1]

    def help(self) -> str:
        """The option's help, the objectives having it and the default (each one's if they
        differ), escaped for argparse's %-formatting."""
        by_default: dict[str, list[str]] = {}
        for objective, spec in self.uses:
            by_default.setdefault(spec.default_text, []).append(objective)
        if len(by_default) == 1:
            default = f"default: {self.spec.default_text}"
        else:
            default = "defaults: " + "; ".join(f"{', '.join(objs)}: {text}"
                                               for text, objs in by_default.items())
        users = ", ".join(objective for objective, _ in self.uses)
        return f"{self.spec.help} [{users}] ({default})".replace("%", "%%")


def _parser_key(spec: OptionSpec) -> tuple:
    # int_range/float_range build a closure per field: the same factory and the same interval
    # (the closure's __name__, e.g. "number in (0, 1]") parse alike
    parse = spec.parse
    key = None if parse is None else (parse.__module__, parse.__qualname__, parse.__name__)
    return key, spec.choices


def collect_flags(objectives: Mapping[str, type]) -> dict[str, ObjectiveFlag]:
    """``{option: flag}`` over ``objectives`` (name -> class with ``Options``), in the order
    the options first appear (objectives sorted by name).

    Raises:
        ValueError: two objectives declare the same option with another ``type=`` or other
            choices (one flag could not parse both).
        TypeError: an option without help (see :func:`~sslunet.ssl.objectives.options.
            option_specs`).
    """
    flags: dict[str, ObjectiveFlag] = {}
    for objective in sorted(objectives):
        for spec in option_specs(objectives[objective].Options):
            known = flags.get(spec.name)
            if known is not None and _parser_key(known.spec) != _parser_key(spec):
                first = known.uses[0][0]
                raise ValueError(f"objectives '{first}' and '{objective}' both have option "
                                 f"{spec.name!r} but parse it differently (type= or choices); "
                                 f"one flag {flag_name(spec.name)} cannot serve both")
            uses = known.uses if known is not None else ()
            flags[spec.name] = ObjectiveFlag(uses + ((objective, spec),))
    return flags


def add_objective_args(p: argparse.ArgumentParser,
                       objectives: Mapping[str, type]) -> dict[str, ObjectiveFlag]:
    """Declare every objective option as a flag (default None: not given); returns the flags."""
    flags = collect_flags(objectives)
    g = p.add_argument_group("objective options (only those of the chosen objective apply)")
    for name, flag in flags.items():
        choices = list(flag.spec.choices) if flag.spec.choices else None
        g.add_argument(flag_name(name), dest=name, type=flag.spec.parse, choices=choices,
                       help=flag.help())
    return flags


def given_options(args: argparse.Namespace, flags: Mapping[str, ObjectiveFlag]) -> dict:
    """``{option: value}`` of the objective flags that were given."""
    return {k: getattr(args, k) for k in flags if getattr(args, k, None) is not None}
