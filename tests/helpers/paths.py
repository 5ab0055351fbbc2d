"""Where the repository and the real datasets are."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REAL_DATA = REPO.parent / "shared" / "data"


def real_dataset(name: str) -> Path:
    """Path of a real dataset under :data:`REAL_DATA`; skips the test when it is absent.

    Tests that call this are marked ``realdata`` (and are skipped as a whole when
    :data:`REAL_DATA` is missing, see ``tests/conftest.py``)."""
    path = REAL_DATA / name
    if not (path / "dataset.json").is_file():
        pytest.skip(f"real dataset {name} not available at {path}")
    return path
