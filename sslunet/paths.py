"""The standard folder layout: raw, preprocessed and results roots.

``SSLUNET_RAW``, ``SSLUNET_PREPROCESSED`` and ``SSLUNET_RESULTS`` set each root; any that is
unset falls back to ``$SSLUNET_HOME/{raw,preprocessed,results}`` with ``SSLUNET_HOME``
defaulting to ``~/sslunet``. Only the CLI calls :meth:`Paths.from_environ`; library code takes a
``Paths`` argument.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from sslunet.errors import InputError


@dataclass(frozen=True)
class Paths:
    raw: Path
    preprocessed: Path
    results: Path

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> "Paths":
        home = Path(env.get("SSLUNET_HOME") or Path.home() / "sslunet").expanduser()

        def pick(var: str, sub: str) -> Path:
            value = env.get(var)
            return Path(value).expanduser() if value else home / sub

        return cls(
            raw=pick("SSLUNET_RAW", "raw"),
            preprocessed=pick("SSLUNET_PREPROCESSED", "preprocessed"),
            results=pick("SSLUNET_RESULTS", "results"),
        )

    @classmethod
    def under(cls, home: str | Path) -> "Paths":
        home = Path(home)
        return cls(home / "raw", home / "preprocessed", home / "results")

    def check_roots(self) -> "Paths":
        """Refuse roots that cannot be folders (``SSLUNET_HOME`` or a root that is a file):
        every command would otherwise fail later with a misleading message."""
        for name in ("raw", "preprocessed", "results"):
            check_folder_path(getattr(self, name), f"{name} root (SSLUNET_{name.upper()}, "
                                                   f"default $SSLUNET_HOME/{name})")
        return self

    def describe(self) -> str:
        return (f"sslunet folders: raw={self.raw}  preprocessed={self.preprocessed}  "
                f"results={self.results}")


# ------------------------------------------------------------------------- output folders
def _nearest_existing(folder: Path, what: str) -> Path:
    """The folder itself or its nearest existing ancestor, which must be a real folder."""
    target = Path(os.path.abspath(folder))
    probe = target
    while not probe.exists():
        if probe.is_symlink():
            raise InputError(f"{what} cannot be created: {probe} is a broken symbolic link",
                             folder)
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        if probe == target:
            raise InputError(f"{what} exists but is not a folder", folder)
        raise InputError(f"{what} cannot be created: {probe} is a file, not a folder", folder)
    return probe


def check_folder_path(folder: str | Path, what: str) -> Path:
    """``folder`` if it is a folder or could be created as one (no file in the way); writes
    nothing. For roots that a command reads (a missing one is reported by the reader)."""
    _nearest_existing(Path(folder), what)
    return Path(folder)


def check_writable_folder(folder: str | Path, what: str) -> Path:
    """Check, before any work, that ``folder`` is or can become a writable folder.

    Creates nothing that stays: the nearest existing folder on the way to ``folder`` (the folder
    itself when it exists) must be a real folder in which a temporary file can be created and
    removed. A read-only or immutable folder, a file in the way (``SSLUNET_HOME`` that is a file,
    a results root that is not a folder) or a broken link is an :class:`InputError` naming
    ``folder``, the ``what`` it is for and the reason.

    Returns:
        ``folder`` as a :class:`Path`.
    """
    folder = Path(folder)
    probe = _nearest_existing(folder, what)
    before = probe.stat()
    try:
        fd, tmp = tempfile.mkstemp(prefix=".sslunet-write-test-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        why = e.strerror or type(e).__name__
        if probe == Path(os.path.abspath(folder)):
            raise InputError(f"{what} is not writable ({why})", folder) from None
        raise InputError(f"{what} cannot be created: {probe} is not writable ({why})",
                         folder) from None
    try:  # leave no trace: the folder's modification time is what it was
        os.utime(probe, ns=(before.st_atime_ns, before.st_mtime_ns))
    except OSError:
        pass  # (only the owner may set times; the probe itself succeeded)
    return folder


_UNSAFE_NAME = re.compile(r"[/\\\x00-\x1f]")


def check_folder_name(name: str, what: str) -> str:
    """``name`` if it can be used as one folder name inside a root; else an InputError.

    Refused: empty names, ``.`` and ``..``, path separators (``/``, ``\\``), control
    characters and a leading ``-`` or ``.`` (hidden or option-like folders).
    """
    if not name or name in (".", "..") or _UNSAFE_NAME.search(name) or name[0] in "-." \
            or name != name.strip() or len(name) > 200:
        raise InputError(f"{what} {name!r} cannot be a folder name: use letters, digits and "
                         "_ - . + (no /, no leading . or -, at most 200 characters)")
    return name


def check_inside(root: str | Path, path: str | Path, what: str) -> Path:
    """``path`` if it lies inside ``root`` (after resolving ``..`` and links); else InputError."""
    root_r, path_r = Path(root).resolve(), Path(path).resolve()
    if path_r != root_r and root_r not in path_r.parents:
        raise InputError(f"{what} would be written outside {root}", path)
    return Path(path)
