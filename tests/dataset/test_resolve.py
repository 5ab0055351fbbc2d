"""Tests for sslunet.dataset.resolve: what ``-d`` accepts (an ID, a name, a path)."""

from __future__ import annotations

import pytest

from sslunet.dataset.resolve import resolve_dataset_name, resolve_raw_dataset
from sslunet.errors import InputError


def _make_layout(raw_root, *names):
    for n in names:
        (raw_root / n).mkdir(parents=True)
        (raw_root / n / "dataset.json").write_text("{}")


@pytest.mark.parametrize("spec", ["2", "002", "CMR", "cmr", "Dataset002_CMR", "dataset002_cmr"])
def test_resolve_dataset_name_forms(tmp_path, spec):
    _make_layout(tmp_path, "Dataset002_CMR", "Dataset003_ACDC", "Dataset012_CMRx")
    assert resolve_dataset_name(spec, [tmp_path]) == "Dataset002_CMR"


def test_resolve_unknown_lists_known(tmp_path):
    _make_layout(tmp_path, "Dataset002_CMR", "Dataset003_ACDC")
    (tmp_path / "not_a_dataset").mkdir()
    with pytest.raises(InputError) as err:
        resolve_dataset_name("Prostate", [tmp_path])
    assert "Dataset002_CMR, Dataset003_ACDC" in str(err.value)
    assert "not_a_dataset" not in str(err.value)


def test_resolve_ambiguous(tmp_path):
    _make_layout(tmp_path, "Dataset002_CMR", "Dataset012_CMR")
    with pytest.raises(InputError, match="ambiguous"):
        resolve_dataset_name("CMR", [tmp_path])
    assert resolve_dataset_name("12", [tmp_path]) == "Dataset012_CMR"


def test_resolve_path_is_taken_as_is(tmp_path, raw_dataset):
    root = raw_dataset(n_labelled=1)
    assert resolve_raw_dataset(str(root), tmp_path / "elsewhere") == root.resolve()
    with pytest.raises(InputError, match="does not exist"):
        resolve_raw_dataset(str(tmp_path / "missing" / "Dataset009_X"), tmp_path)
