"""What every ``sslunet_*`` command shares: error reporting and the folder layout.

Environment variables are read here, at the CLI boundary, and nowhere else: library functions
receive :class:`sslunet.paths.Paths` (or plain paths) explicitly.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

from sslunet.errors import InputError
from sslunet.paths import Paths


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


def paths_from_env(verbose: bool = True) -> Paths:
    """Resolve the folder layout from the environment (see :func:`sslunet.paths.resolve_paths`)."""
    paths = Paths.from_environ(os.environ)
    if verbose:
        print(paths.describe(), file=sys.stderr)
    return paths
