"""Errors that the command line reports as one line, exit status 2, no traceback."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """A problem with the user's input (a file, a folder, an argument).

    The CLI prints ``str(error)`` on one line and exits with status 2. The message names the
    offending file (when there is one) and what is wrong with it.
    """

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class SettingError(InputError, ValueError):
    """A setting out of its range, or settings that contradict each other.

    Raised by typed configurations (e.g. :class:`sslunet.training.config.TrainingConfig`) when
    they are built: the CLI reports it as one line (it is an :class:`InputError`), library
    callers may catch it as the ``ValueError`` it also is.
    """
