"""argparse ``type=`` functions: parse one command-line string, refuse it with a one-line reason.

A library module (it imports nothing from :mod:`sslunet.cli`), because objectives name the
parser of each of their options next to its default (see
:mod:`sslunet.ssl.objectives.options`); the commands use the same functions, re-exported by
``sslunet/cli/_common.py``. Each raises ``argparse.ArgumentTypeError``, which argparse reports
as its usual one-line error with exit status 2.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable


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


def positive_int_tuple(text: str) -> tuple[int, ...]:
    """``type=`` for ``N`` or ``N,N,N`` with every entry >= 1."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or N,N,N, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"entries must be >= 1, got {text!r}")
    return values
