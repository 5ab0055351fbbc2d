"""Tests for sslunet.evaluation.api: scoring folders of label maps (summary files, parallel
workers, inferred labels, missing predictions, geometry checks).

The folders are written by :mod:`tests.helpers.label_folders`.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from sslunet.errors import InputError
from sslunet.evaluation.api import evaluate_folders
from sslunet.evaluation.metrics import (
    dice,
    hd95,
    volume_difference_ml,
)
from tests.helpers.label_folders import SPACING_XYZ, make_folders, write_label


def test_evaluate_folders_matches_direct_metrics(tmp_path, capsys):
    ref_dir, pred_dir, arrays = make_folders(tmp_path)
    out_dir = tmp_path / "out"
    summary = evaluate_folders(ref_dir, pred_dir, output=out_dir)
    table = capsys.readouterr().out
    assert "liver" in table and "lesion" in table and "±" in table
    written = json.loads((out_dir / "summary.json").read_text())
    assert written["labels"] == {"liver": 1, "lesion": 2}
    assert "notes" in written and "Dice 1.0, HD95 0.0" in written["notes"]["both_empty"]
    spacing = SPACING_XYZ[::-1]  # numpy order
    rows = list(csv.DictReader(open(out_dir / "summary.csv")))
    assert len(rows) == 6
    for record in written["per_case"]:
        ref, pred = arrays[record["case"]]
        assert record["spacing"] == pytest.approx(spacing)
        for name, value in written["labels"].items():
            r, p = ref == value, pred == value
            m = record["metrics"][name]
            assert m["dice"] == pytest.approx(dice(r, p))
            expected_hd = hd95(r, p, spacing)
            assert (m["hd95"] is None) if math.isnan(expected_hd) else \
                m["hd95"] == pytest.approx(expected_hd)
            assert m["volume_diff_ml"] == pytest.approx(volume_difference_ml(r, p, spacing)[0])
            row = next(x for x in rows if x["case"] == record["case"] and x["class"] == name)
            assert float(row["dice"]) == pytest.approx(m["dice"])
            assert (math.isnan(float(row["hd95"])) if m["hd95"] is None
                    else float(row["hd95"]) == pytest.approx(m["hd95"]))
    lesion = written["per_class"]["lesion"]
    assert lesion["hd95"]["undefined"] == 1 and lesion["hd95"]["n"] == 2
    lesion_dice = [written["per_case"][i]["metrics"]["lesion"]["dice"] for i in range(3)]
    assert lesion_dice[1] == 0.0 and lesion_dice[2] == 1.0
    assert lesion["dice"]["mean"] == pytest.approx(np.mean(lesion_dice))
    assert lesion["dice"]["std"] == pytest.approx(np.std(lesion_dice))
    assert written["per_case"][2]["metrics"]["lesion"]["hd95"] == 0.0
    assert written["foreground_mean"]["dice"] == pytest.approx(
        np.mean([written["per_class"][c]["dice"]["mean"] for c in ("liver", "lesion")]))
    assert summary["num_cases"] == 3 and not (pred_dir / "summary.json").exists()


def test_parallel_and_inferred_labels(tmp_path):
    ref_dir, pred_dir, _ = make_folders(tmp_path, with_dataset_json=False)
    serial = evaluate_folders(ref_dir, pred_dir, output=tmp_path / "a", verbose=False)
    parallel = evaluate_folders(ref_dir, pred_dir, output=tmp_path / "b", num_processes=2,
                                verbose=False)
    assert serial["labels"] == parallel["labels"] == {"1": 1, "2": 2}
    assert "inferred" in serial["labels_source"]
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert a["per_case"] == b["per_case"] and a["per_class"] == b["per_class"]
    # Label 2 is absent from case 2 in both files: scored as both empty.
    assert a["per_case"][2]["metrics"]["2"]["dice"] == 1.0


def test_prediction_against_itself(tmp_path):
    ref_dir, _, _ = make_folders(tmp_path)
    summary = evaluate_folders(ref_dir, ref_dir, output=tmp_path / "self", verbose=False)
    for record in summary["per_case"]:
        for m in record["metrics"].values():
            assert m["dice"] == 1.0 and m["hd95"] == 0.0 and m["volume_diff_ml"] == 0.0


def test_missing_predictions(tmp_path):
    ref_dir, pred_dir, _ = make_folders(tmp_path)
    (pred_dir / "case1.nii.gz").unlink()
    with pytest.raises(Exception, match="no prediction"):
        evaluate_folders(ref_dir, pred_dir, verbose=False)
    summary = evaluate_folders(ref_dir, pred_dir, allow_missing=True, verbose=False)
    assert summary["missing_predictions"] == ["case1.nii.gz"] and summary["num_cases"] == 2


def test_geometry_tolerance(tmp_path):
    ref_dir, pred_dir, arrays = make_folders(tmp_path)
    ref, pred = arrays["case0.nii.gz"]
    write_label(pred_dir / "case0.nii.gz", pred, spacing=(0.8 * (1 + 1e-6), 1.2, 3.0),
                origin=(10.0 + 1e-6, -5.0, 2.0))
    summary = evaluate_folders(ref_dir, pred_dir, verbose=False)
    assert summary["num_cases"] == 3
    image = sitk.GetImageFromArray(pred)
    image.SetSpacing(SPACING_XYZ)
    image.SetOrigin((10.0, -5.0, 2.0))
    image.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(image, str(pred_dir / "case0.nii.gz"))
    with pytest.raises(Exception, match="direction"):
        evaluate_folders(ref_dir, pred_dir, verbose=False)


def test_non_label_prediction_reported_from_worker_process(tmp_path):
    ref_dir, pred_dir, arrays = make_folders(tmp_path)
    values = arrays["case2.nii.gz"][1].astype(np.float32)
    values[0, 0, 0] = 0.5
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(SPACING_XYZ)
    image.SetOrigin((10.0, -5.0, 2.0))
    sitk.WriteImage(image, str(pred_dir / "case2.nii.gz"))
    with pytest.raises(InputError, match=r"case2\.nii\.gz: not a label map"):
        evaluate_folders(ref_dir, pred_dir, num_processes=2, verbose=False)
    assert not (pred_dir / "summary.json").exists()
