"""Turning the ``-d`` argument into a dataset folder name.

``-d`` accepts a numeric ID (``2``, ``002``), a name (``CMR``, case-insensitive), a full folder
name (``Dataset002_CMR``) or a path to a raw dataset folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from sslunet.errors import InputError

_FOLDER = re.compile(r"^Dataset(\d{3})_(.+)$")


def _known(roots: list[Path]) -> list[str]:
    names = set()
    for root in roots:
        if root.is_dir():
            names.update(p.name for p in root.iterdir() if p.is_dir() and _FOLDER.match(p.name))
    return sorted(names)


def resolve_dataset_name(spec: str, roots: list[Path]) -> str:
    """Return the ``DatasetXXX_Name`` folder name that ``spec`` designates among ``roots``.

    Raises:
        InputError: when nothing or more than one dataset matches; the message lists the
            datasets that exist.
    """
    known = _known(roots)
    if spec.isdigit():
        hits = [n for n in known if int(_FOLDER.match(n)[1]) == int(spec)]
    else:
        hits = [n for n in known if n.lower() == spec.lower()]
        hits = hits or [n for n in known if _FOLDER.match(n)[2].lower() == spec.lower()]
    if len(hits) == 1:
        return hits[0]
    listing = ", ".join(known) if known else "none"
    where = " or ".join(str(r) for r in roots)
    if not hits:
        raise InputError(f"no dataset matches '{spec}' in {where}; datasets found: {listing}")
    raise InputError(f"'{spec}' is ambiguous: it matches {', '.join(hits)}; use the full name")


def resolve_raw_dataset(spec: str, raw_root: Path) -> Path:
    """Path of the raw dataset folder for ``spec`` (an existing path is taken as it is)."""
    p = Path(spec).expanduser()
    if ("/" in spec or p.is_absolute() or spec.startswith(".")) or (
        p.is_dir() and (p / "dataset.json").exists()
    ):
        if p.is_file():
            raise InputError("is a file; give the dataset folder (the one holding "
                             "dataset.json)", p)
        if not p.is_dir():
            raise InputError("dataset folder does not exist", p)
        return p.resolve()
    return Path(raw_root) / resolve_dataset_name(spec, [Path(raw_root)])
