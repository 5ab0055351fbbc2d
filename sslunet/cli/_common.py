"""What every ``sslunet_*`` command shares: error reporting, the folder layout, and the
argparse ``type=`` functions that validate numeric values and names at the CLI boundary.

Environment variables are read here, at the CLI boundary, and nowhere else: library functions
receive :class:`sslunet.paths.Paths` (or plain paths) explicitly. Every numeric flag is parsed
by one of the ``type=`` functions here (the generic ones come from
:mod:`sslunet.utils.argtypes`), so a bad value (``-f abc``, ``--epochs 0``, ``--lr -1``)
is argparse's usual one-line error with exit status 2, before any work or folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from sslunet.errors import InputError
from sslunet.paths import Paths, check_folder_name
from sslunet.planning.splits import SLICES_INFIX, budget_tag, parse_budget
from sslunet.utils.argtypes import (  # noqa: F401  (re-exported for the commands)
    float_range, int_range, nonnegative_float, nonnegative_int, positive_float, positive_int,
    positive_int_tuple, probability, seed_int,
)


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
# The generic ones (numbers in a range, N,N,N) are imported above from sslunet.utils.argtypes,
# a library module because objectives name them for their options; these are the commands' own.
def fold(text: str) -> int | str:
    """``type=`` for a cross-validation fold: an integer >= 0, or ``all``."""
    if text == "all":
        return text
    try:
        return nonnegative_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be a fold number (0, 1, ...) or 'all', got "
                                         f"{text!r}") from None


def volume_budget(text: str) -> str:
    """``type=`` for a number of labelled volumes >= 1 or ``all`` (no sparse budget)."""
    if text != "all" and SLICES_INFIX in text:
        raise argparse.ArgumentTypeError(f"must be a number of volumes >= 1 or 'all', got {text!r}")
    return label_budget(text)


def label_budget(text: str) -> str:
    """``type=`` for a label budget: a number of labelled volumes >= 1, ``all``, or a sparse
    budget ``<slices>sl<volumes|all>`` (e.g. ``20sl10``: 20 slices over 10 volumes)."""
    try:
        return budget_tag(*parse_budget(text))  # normalised: "02" -> "2"
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of labelled volumes >= 1, 'all', or "
                                         f"<slices>sl<volumes|all> such as 20sl10, got "
                                         f"{text!r}") from None


def folder_name(text: str) -> str:
    """``type=`` for a name that becomes a folder name: it must stay inside its root."""
    try:
        return check_folder_name(text, "name")
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
