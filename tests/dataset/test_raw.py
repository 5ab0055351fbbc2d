"""Tests for sslunet.dataset.raw: reading a raw dataset's layout and ``dataset.json``.

Each library function is checked directly; the CLI's one-line errors are tested end to end in
``tests/cli/``.
"""

from __future__ import annotations

import json
import shutil

import pytest

from sslunet.dataset.raw import load_raw_dataset
from sslunet.errors import InputError
from tests.helpers.damage import edit_meta


SHAPE = (4, 12, 12)


def test_load_raw_dataset_lists_cases_by_source(raw_dataset):
    root = raw_dataset(n_labelled=3, n_unlabeled=2, n_test=1, n_channels=2)
    ds = load_raw_dataset(root)
    assert ds.name == "Dataset001_Toy" and ds.num_channels == 2
    assert [c.case_id for c in ds.cases_from("imagesTr")] == ["case_000", "case_001", "case_002"]
    assert [c.case_id for c in ds.cases_from("imagesUnlabeled")] == ["unl_000", "unl_001"]
    assert [c.case_id for c in ds.cases_from("imagesTs")] == ["ts_000"]
    case = ds.cases_from("imagesTr")[1]
    assert [p.name for p in case.images] == ["case_001_0000.nii.gz", "case_001_0001.nii.gz"]
    assert case.label.name == "case_001.nii.gz"
    assert all(c.label is None for c in ds.cases_from("imagesUnlabeled"))
    assert ds.cases_from("imagesTs")[0].label.parent.name == "labelsTs"
    assert ds.labels == {"background": 0, "left": 1, "right": 2}


def test_hidden_and_foreign_files_are_ignored(raw_dataset):
    root = raw_dataset(n_labelled=2)
    (root / "imagesTr" / ".DS_Store").write_text("x")
    (root / "imagesTr" / "notes.txt").write_text("x")
    (root / "labelsTr" / ".case_000.nii.gz.tmp").write_text("x")
    assert len(load_raw_dataset(root).cases) == 2


@pytest.mark.parametrize("mutate, offender, message", [
    (lambda r: (r / "imagesTr" / "case_000_0000.nii.gz").rename(r / "imagesTr" / "case_000.nii.gz"),
     "case_000.nii.gz", "CASE_XXXX"),
    (lambda r: (r / "labelsTr" / "case_001.nii.gz").unlink(), "case_001_0000.nii.gz", "no label"),
    (lambda r: shutil.copy(r / "imagesTr" / "case_000_0000.nii.gz",
                           r / "imagesTr" / "case_000_0001.nii.gz"),
     "case_000_0001.nii.gz", "not declared"),
    (lambda r: shutil.copytree(r / "imagesTr", r / "imagesUnlabeled"), "imagesUnlabeled",
     "appears in both"),
])
def test_structural_problems_name_the_file(raw_dataset, mutate, offender, message):
    root = raw_dataset(n_labelled=2)
    mutate(root)
    with pytest.raises(InputError, match=message) as err:
        load_raw_dataset(root)
    assert err.value.path is not None and err.value.path.endswith(offender)


@pytest.mark.parametrize("change, message", [
    ({"numTraining": 5}, "numTraining is 5"),
    ({"file_ending": ".png"}, "file_ending"),
    ({"channel_names": {"1": "T2"}}, "0..C-1"),
    ({"labels": {"background": 0, "a": 1.5}}, "integers"),
    ({"labels": {"a": 1, "b": 2}}, "consecutive"),
])
def test_dataset_json_problems(raw_dataset, change, message):
    root = raw_dataset(n_labelled=2)
    meta = json.loads((root / "dataset.json").read_text())
    meta.update(change)
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=message) as err:
        load_raw_dataset(root)
    assert err.value.path.endswith("dataset.json")


@pytest.mark.parametrize("change, message", [
    ({"labels": {"left": 1, "right": 2}}, "background with value 0"),
    ({"labels": {"background": 0, "left": 1, "right": 1}}, "same value 1"),
    ({"labels": {"background": 0, "left": -1}}, "non-negative"),
    ({"labels": {"background": 0, "left": [1, 2]}}, "region labels"),
    ({"labels": {"background": 0, **{f"l{i}": i for i in range(1, 200)}}}, "at most 128"),
    ({"channel_names": {}}, "non-empty"),
    ({"channel_names": {"0": ""}}, "non-empty name"),
    ({"numTraining": True}, "numTraining"),
])
def test_dataset_json_rules(raw_dataset, change, message):
    root = raw_dataset(n_labelled=2, shape=SHAPE)
    edit_meta(root, **change)
    with pytest.raises(InputError, match=message) as err:
        load_raw_dataset(root)
    assert err.value.path.endswith("dataset.json")
