"""Tests for sslunet.dataset.labels (the ignore label) and how dataset.json and plans use it."""

from __future__ import annotations

import json

import pytest

from sslunet.dataset.labels import (
    class_labels, foreground_labels, ignore_problem, ignore_value, num_classes,
)
from sslunet.dataset.raw import read_dataset_json
from sslunet.errors import InputError
from sslunet.plans import PlansError

SPARSE = {"background": 0, "left": 1, "right": 2, "ignore": 3}


def test_label_scheme_with_and_without_ignore():
    assert ignore_value(SPARSE) == 3 and ignore_value({"background": 0, "a": 1}) is None
    assert class_labels(SPARSE) == {"background": 0, "left": 1, "right": 2}
    assert foreground_labels(SPARSE) == {"left": 1, "right": 2}
    assert num_classes(SPARSE) == 3 and num_classes({"background": 0, "a": 1}) == 2
    assert ignore_problem(SPARSE) == ""
    assert "highest" in ignore_problem({"background": 0, "ignore": 1, "a": 2})


def _dataset_json(tmp_path, labels):
    meta = {"channel_names": {"0": "T2"}, "labels": labels, "numTraining": 1,
            "file_ending": ".nii.gz"}
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    return tmp_path


def test_dataset_json_accepts_ignore_only_as_the_highest_label(tmp_path):
    assert read_dataset_json(_dataset_json(tmp_path, SPARSE))["labels"] == SPARSE
    with pytest.raises(InputError, match="ignore.*highest") as err:
        read_dataset_json(_dataset_json(tmp_path, {"background": 0, "ignore": 1, "a": 2}))
    assert "dataset.json" in str(err.value)


def test_plans_give_the_ignore_label_no_output_channel(planned):
    _, plans = next(iter(planned.values()))
    sparse = plans.replace(labels=SPARSE).check()
    assert sparse.num_classes == 3 and sparse.ignore_label == 3
    assert plans.replace(labels={"background": 0, "a": 1}).ignore_label is None
    with pytest.raises(PlansError, match="highest"):
        plans.replace(labels={"background": 0, "ignore": 1, "a": 2}).check()
