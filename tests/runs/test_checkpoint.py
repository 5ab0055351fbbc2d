"""Tests for sslunet.runs.checkpoint: weights-only loading, refusing foreign or malicious files.

Runs use the tiny dataset of :mod:`tests.helpers.datasets` (a few seconds each on 2 CPU cores).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sslunet.errors import InputError
from sslunet.runs import checkpoint as ckpt_mod
from sslunet.runs.checkpoint import load_checkpoint
from tests.helpers.datasets import trained_home


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _side_effect(path: str) -> None:
    Path(path).write_text("code from a checkpoint ran")


class Booby:
    """Unpickling this calls ``_side_effect``: what a malicious checkpoint could do."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return _side_effect, (self.path,)


def test_checkpoint_with_pickled_object_is_refused_not_executed(tmp_path):
    marker = tmp_path / "executed.txt"
    bad = tmp_path / "bad.pt"
    torch.save({"format": ckpt_mod.FORMAT, "version": ckpt_mod.VERSION, "x": Booby(marker)}, bad)
    with pytest.raises(InputError, match="cannot load checkpoint") as err:
        load_checkpoint(bad)
    assert "\n" not in str(err.value) and not marker.exists()
    # the same file really runs code when loaded unsafely: the test above can fail
    torch.load(bad, weights_only=False)
    assert marker.exists()


def test_foreign_or_missing_checkpoint_is_input_error(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(InputError, match="not an sslunet checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a zip file")
    with pytest.raises(InputError, match="cannot load"):
        load_checkpoint(tmp_path / "garbage.pt")
    with pytest.raises(InputError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_every_written_checkpoint_loads_weights_only(tmp_path_factory, tmp_path):
    _, run_dir = trained_home(tmp_path_factory, tmp_path / "home")
    files = sorted(run_dir.glob("*.pt"))
    assert [f.name for f in files] == ["checkpoint_best.pt", "checkpoint_final.pt"]
    for f in files:
        ckpt = torch.load(f, weights_only=True)
        assert ckpt["format"] == ckpt_mod.FORMAT and ckpt["configuration"] == "2d"
        assert ckpt["epoch"] >= 1 and "decoder.seg_layers.0.weight" in ckpt["network_weights"]
        assert load_checkpoint(f)["kind_of_checkpoint"] in ("best", "final")
