"""What every ``sslunet_*`` command shares: error reporting, the folder layout, and the
argparse ``type=`` functions that validate numeric values and names at the CLI boundary.

Environment variables are read here, at the CLI boundary, and nowhere else: library functions
receive :class:`sslunet.paths.Paths` (or plain paths) explicitly. Every numeric flag is parsed
by one of the ``type=`` functions below, so a bad value (``-f abc``, ``--epochs 0``, ``--lr -1``)
is argparse's usual one-line error with exit status 2, before any work or folder.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Callable

from sslunet.errors import InputError
from sslunet.paths import Paths, check_folder_name


def run(fn: Callable[[], object]) -> None:
    """Run ``fn``; report an :class:`InputError` as one line on stderr with exit status 2."""
    try:
        fn()
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept; run the command again to resume "
              "(training commands: add --continue)", file=sys.stderr)
        sys.exit(130)


def paths_from_env(verbose: bool = True, check: bool = True) -> Paths:
    """Resolve the folder layout from the environment (see :class:`sslunet.paths.Paths`).

    With ``check``, a root that cannot be a folder (``SSLUNET_HOME`` that is a file, ...) is an
    :class:`InputError` naming it; commands that do not use the roots pass ``check=False``.
    """
    paths = Paths.from_environ(os.environ)
    if verbose:
        print(paths.describe(), file=sys.stderr)
    return paths.check_roots() if check else paths


# ------------------------------------------------------------------------- argparse types
def _parse(kind: type, text: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """``type=`` for an integer in ``[low, high]`` (``high`` None: no upper bound)."""
    where = f">= {low}" if high is None else f"in [{low}, {high}]"

    def parse(text: str) -> int:
        value = _parse(int, text)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be an integer {where}, got {text!r}")
        return value

    parse.__name__ = f"integer {where}"
    return parse


def float_range(low: float | None = None, high: float | None = None, low_open: bool = False,
                high_open: bool = False) -> Callable[[str], float]:
    """``type=`` for a finite number in an interval (open or closed at each end)."""
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    where = (f"> {low:g}" if low_open else f">= {low:g}") if high is None else \
        f"in {left}{low:g}, {high:g}{right}"

    def parse(text: str) -> float:
        value = _parse(float, text)
        if (low is not None and (value < low or (low_open and value == low))) or \
                (high is not None and (value > high or (high_open and value == high))):
            raise argparse.ArgumentTypeError(f"must be a number {where}, got {text!r}")
        return value

    parse.__name__ = f"number {where}"
    return parse


positive_int = int_range(1)
nonnegative_int = int_range(0)
seed_int = int_range(0, 2**32 - 1)  # what numpy's and torch's seeding accept
positive_float = float_range(0.0, low_open=True)
nonnegative_float = float_range(0.0)
probability = float_range(0.0, 1.0)


def fold(text: str) -> int | str:
    """``type=`` for a cross-validation fold: an integer >= 0, or ``all``."""
    if text == "all":
        return text
    try:
        return nonnegative_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be a fold number (0, 1, ...) or 'all', got "
                                         f"{text!r}") from None


def label_budget(text: str) -> str:
    """``type=`` for a label budget: a number of labelled volumes >= 1, or ``all``."""
    if text == "all":
        return text
    try:
        return str(positive_int(text))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be a number of labelled volumes >= 1 or 'all', "
                                         f"got {text!r}") from None


def positive_int_tuple(text: str) -> tuple[int, ...]:
    """``type=`` for ``N`` or ``N,N,N`` with every entry >= 1."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or N,N,N, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"entries must be >= 1, got {text!r}")
    return values


def folder_name(text: str) -> str:
    """``type=`` for a name that becomes a folder name: it must stay inside its root."""
    try:
        return check_folder_name(text, "name")
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
