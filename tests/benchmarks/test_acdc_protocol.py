"""The ACDC benchmark's split (benchmarks/acdc_protocol.py): by patient, test never trained on."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from sslunet.paths import Paths
from tests.helpers.paths import REAL_DATA, REPO

SOURCE = REAL_DATA / "Dataset003_ACDC"

pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not SOURCE.is_dir(), reason="shared ACDC data not present")]


def _protocol():
    spec = importlib.util.spec_from_file_location("acdc_protocol",
                                                  REPO / "benchmarks" / "acdc_protocol.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cases(folder: Path, suffix: str) -> set[str]:
    return {p.name[: -len(suffix)] for p in folder.glob(f"*{suffix}")}


def test_split_is_by_patient_and_test_never_trained_on(tmp_path):
    proto = _protocol()
    paths = Paths.under(tmp_path)
    raw = proto.derive_raw(paths)
    train = _cases(raw / "imagesTr", "_0000.nii.gz")
    test = _cases(raw / "imagesTs", "_0000.nii.gz")
    assert len(train) == 40 and len(test) == 20
    assert train == _cases(raw / "labelsTr", ".nii.gz") and test == _cases(raw / "labelsTs",
                                                                            ".nii.gz")
    train_patients = {proto.patient(c) for c in train}
    test_patients = {proto.patient(c) for c in test}
    assert not train_patients & test_patients and len(test_patients) == proto.TEST_PATIENTS
    assert sorted(test_patients) == proto.test_patients()  # seeded: the same every time
    assert json.loads((raw / "dataset.json").read_text())["numTraining"] == 40
    # cross-validation folds by patient: both frames of a patient on the same side
    pre = paths.preprocessed / proto.NAME
    pre.mkdir(parents=True)
    (pre / "splits.json").write_text(json.dumps([{"train": sorted(train), "val": []}]))
    proto.write_patient_splits(paths)
    folds = json.loads((pre / "splits.json").read_text())
    assert len(folds) == 5
    for fold in folds:
        val_patients = {proto.patient(c) for c in fold["val"]}
        assert not val_patients & {proto.patient(c) for c in fold["train"]}
        assert set(fold["train"]) | set(fold["val"]) == train
        assert len(fold["val"]) == 2 * len(val_patients)
