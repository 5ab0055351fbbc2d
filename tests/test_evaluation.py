"""Tests for sslunet.evaluation: metrics against known answers and a brute-force reference."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.distance import cdist

from sslunet.cli.evaluate import main as cli_main
from sslunet.evaluation import case_metrics, dice, evaluate_folders, hd95, volume_difference_ml
from sslunet.evaluation.metrics import directed_surface_distances
from tests.helpers.paths import REPO


# --------------------------------------------------------------------------- naive references

def naive_surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it, by explicit neighbour checks."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    out = np.zeros_like(mask)
    for axis in range(mask.ndim):
        for step in (-1, 1):
            out |= ~np.roll(padded, step, axis=axis)[inner]
    return mask & out


def naive_hd95(a: np.ndarray, b: np.ndarray, spacing) -> float:
    pa = np.argwhere(naive_surface(a)) * np.asarray(spacing)
    pb = np.argwhere(naive_surface(b)) * np.asarray(spacing)
    d = cdist(pa, pb)
    return float(np.percentile(np.concatenate([d.min(axis=1), d.min(axis=0)]), 95))


def blob(rng: np.random.Generator, shape, threshold: float = 0.55) -> np.ndarray:
    return ndimage.gaussian_filter(rng.random(shape), 1.5) > np.quantile(
        ndimage.gaussian_filter(rng.random(shape), 1.5), threshold)


# --------------------------------------------------------------------------- Dice

def test_dice_two_cubes_half_overlap():
    a = np.zeros((8, 8, 8), bool)
    b = np.zeros_like(a)
    a[0:4, 0:4, 0:4] = True
    b[2:6, 0:4, 0:4] = True  # overlap 2x4x4 = 32 voxels of 64 each
    assert dice(a, b) == pytest.approx(0.5)
    c = np.zeros_like(a)
    c[1:4, 1:4, 1:4] = True  # 27 voxels, all inside a
    assert dice(a, c) == pytest.approx(2 * 27 / (64 + 27))
    assert dice(a, a) == 1.0


def test_empty_mask_rules():
    empty = np.zeros((5, 6, 7), bool)
    full = empty.copy()
    full[1:3, 2:4, 3:5] = True
    assert dice(empty, empty) == 1.0 and hd95(empty, empty, (1, 1, 1)) == 0.0
    assert dice(empty, full) == 0.0 and math.isnan(hd95(empty, full, (1, 1, 1)))
    assert dice(full, empty) == 0.0 and math.isnan(hd95(full, empty, (1, 1, 1)))


# --------------------------------------------------------------------------- HD95

def test_hd95_parallel_planes_and_anisotropic_shift():
    spacing = (5.0, 1.0, 1.0)
    a = np.zeros((10, 12, 12), bool)
    a[3, 2:9, 2:9] = True
    assert hd95(a, np.roll(a, 1, axis=0), spacing) == pytest.approx(5.0)
    assert hd95(a, np.roll(a, 2, axis=0), spacing) == pytest.approx(10.0)
    # The same one-voxel shift along a 1 mm axis: every surface point of a within 1 mm of b.
    assert hd95(a, np.roll(a, 1, axis=1), spacing) == pytest.approx(1.0)
    # A one-voxel shift of a thick slab along the 5 mm axis: only the two caps move, by 5 mm.
    slab = np.zeros((10, 12, 12), bool)
    slab[2:4, 2:9, 2:9] = True
    assert hd95(slab, np.roll(slab, 1, axis=0), spacing) == pytest.approx(5.0)
    assert hd95(slab, np.roll(slab, 1, axis=0), (1.0, 5.0, 5.0)) == pytest.approx(1.0)


def test_concentric_cubes_directed_distances():
    outer = np.zeros((22, 22, 22), bool)
    outer[1:21, 1:21, 1:21] = True
    inner = np.zeros_like(outer)
    inner[6:16, 6:16, 6:16] = True  # 5 voxels inside every face of the outer cube
    inner_to_outer, outer_to_inner = directed_surface_distances(inner, outer, (1.0, 1.0, 1.0))
    np.testing.assert_allclose(inner_to_outer, 5.0)
    assert outer_to_inner.min() == pytest.approx(5.0)
    assert outer_to_inner.max() == pytest.approx(5.0 * math.sqrt(3))  # corner to corner
    value = hd95(inner, outer, (2.0, 2.0, 2.0))
    assert value == pytest.approx(naive_hd95(inner, outer, (2.0, 2.0, 2.0)))
    assert 10.0 < value < 10.0 * math.sqrt(3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    spacing = (2.5, 0.7, 1.3)
    shape = (12, 16, 14)
    a, b = blob(rng, shape), blob(rng, shape, 0.6)
    assert hd95(a, b, spacing) == pytest.approx(naive_hd95(a, b, spacing))
    # Masks touching the image border: the crop must not change the surface there.
    c = np.zeros(shape, bool)
    c[:5, 3:, :] = True
    assert hd95(a, c, spacing) == pytest.approx(naive_hd95(a, c, spacing))
    # 2d works the same way.
    a2, b2 = blob(rng, (20, 18)), blob(rng, (20, 18))
    assert hd95(a2, b2, (0.5, 3.0)) == pytest.approx(naive_hd95(a2, b2, (0.5, 3.0)))


def test_hd95_small_object_far_away():
    a = np.zeros((6, 30, 30), bool)
    a[2:4, 2:6, 2:6] = True
    b = a.copy()
    b[2:4, 25:27, 25:27] = True  # a false-positive island makes HD95 large
    assert hd95(a, b, (3.0, 1.0, 1.0)) == pytest.approx(naive_hd95(a, b, (3.0, 1.0, 1.0)))
    assert hd95(a, b, (3.0, 1.0, 1.0)) > 20


# --------------------------------------------------------------------------- volume, per case

def test_volume_difference_in_ml():
    spacing = (2.0, 1.0, 0.5)  # 1 mm^3 per voxel
    ref = np.zeros((20, 20, 20), bool)
    ref[:10, :10, :10] = True  # 1000 mm^3 = 1 ml
    pred = np.zeros_like(ref)
    pred[:15, :10, :10] = True  # 1.5 ml
    diff, rel = volume_difference_ml(ref, pred, spacing)
    assert diff == pytest.approx(0.5) and rel == pytest.approx(0.5)
    diff, rel = volume_difference_ml(ref, pred, (4.0, 1.0, 0.5))
    assert diff == pytest.approx(1.0) and rel == pytest.approx(0.5)
    diff, rel = volume_difference_ml(pred, ref, spacing)
    assert diff == pytest.approx(-0.5) and rel == pytest.approx(-1 / 3)
    empty = np.zeros_like(ref)
    assert volume_difference_ml(empty, empty, spacing) == (0.0, 0.0)
    diff, rel = volume_difference_ml(empty, pred, spacing)
    assert diff == pytest.approx(1.5) and math.isnan(rel)


def test_case_metrics_per_class():
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 3, (8, 9, 10))
    pred = np.where(rng.random(ref.shape) < 0.2, 0, ref)
    spacing = (3.0, 1.0, 0.5)
    out = case_metrics(ref, pred, spacing, {"background": 0, "a": 1, "b": 2})
    assert list(out) == ["a", "b"]
    for name, value in (("a", 1), ("b", 2)):
        assert out[name]["dice"] == pytest.approx(dice(ref == value, pred == value))
        assert out[name]["hd95"] == pytest.approx(hd95(ref == value, pred == value, spacing))
    same = case_metrics(ref, ref, spacing, {"a": 1, "b": 2, "absent": 7})
    assert all(m["dice"] == 1.0 and m["hd95"] == 0.0 for m in same.values())


# --------------------------------------------------------------------------- folders

SPACING_XYZ = (0.8, 1.2, 3.0)


def write_label(path: Path, array: np.ndarray, spacing=SPACING_XYZ,
                origin=(10.0, -5.0, 2.0)) -> None:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))


def make_folders(tmp_path: Path, with_dataset_json: bool = True):
    """Three cases (z, y, x) = (6, 16, 14) with labels 1 and 2 and the empty-mask situations."""
    rng = np.random.default_rng(7)
    ref_dir, pred_dir = tmp_path / "ds" / "labelsTr", tmp_path / "pred"
    ref_dir.mkdir(parents=True)
    pred_dir.mkdir()
    if with_dataset_json:
        (tmp_path / "ds" / "dataset.json").write_text(json.dumps(
            {"labels": {"background": 0, "liver": 1, "lesion": 2}}))
    arrays = {}
    for i in range(3):
        ref = np.zeros((6, 16, 14), np.uint8)
        ref[blob(rng, ref.shape, 0.5)] = 1
        ref[1:4, 4:9, 3:7] = 2
        pred = np.where(rng.random(ref.shape) < 0.1, 0, ref).astype(np.uint8)
        pred[2:5, 5:9, 3:8][pred[2:5, 5:9, 3:8] == 0] = 2
        if i == 1:
            pred[pred == 2] = 0  # lesion missed: one empty -> HD95 undefined
        if i == 2:
            ref[ref == 2] = 0
            pred[pred == 2] = 0  # no lesion anywhere: both empty
        write_label(ref_dir / f"case{i}.nii.gz", ref)
        write_label(pred_dir / f"case{i}.nii.gz", pred)
        arrays[f"case{i}.nii.gz"] = (ref, pred)
    return ref_dir, pred_dir, arrays


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
    assert serial["labels"] == {"1": 1, "2": 2}
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


# --------------------------------------------------------------------------- CLI and bad input

def test_cli_geometry_mismatch_exit_2_nothing_written(tmp_path):
    ref_dir, pred_dir, arrays = make_folders(tmp_path)
    write_label(pred_dir / "case1.nii.gz", arrays["case1.nii.gz"][1], spacing=(0.8, 1.2, 2.0))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "summary.json").write_text("previous")
    proc = subprocess.run([sys.executable, "-m", "sslunet.cli.evaluate", "-r", str(ref_dir),
                           "-p", str(pred_dir), "-o", str(out_dir)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "case1.nii.gz" in lines[0] and "spacing" in lines[0]
    assert (out_dir / "summary.json").read_text() == "previous"
    assert not (out_dir / "summary.csv").exists() and not (pred_dir / "summary.json").exists()


def test_cli_success(tmp_path):
    ref_dir, pred_dir, _ = make_folders(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "sslunet.cli.evaluate", "-r", str(ref_dir),
                           "-p", str(pred_dir), "-np", "1"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "lesion" in proc.stdout and (pred_dir / "summary.csv").exists()


def _cli_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as info:
        cli_main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    return err[0]


def test_cli_bad_inputs(tmp_path, capsys):
    ref_dir, pred_dir, arrays = make_folders(tmp_path)
    assert "does not exist" in _cli_error(capsys, ["-r", str(tmp_path / "nope"), "-p",
                                                   str(pred_dir)])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no prediction files" in _cli_error(capsys, ["-r", str(ref_dir), "-p", str(empty)])
    (pred_dir / "stray.nii.gz").write_bytes(b"not an image")
    assert "stray.nii.gz" in _cli_error(capsys, ["-r", str(ref_dir), "-p", str(pred_dir)])
    (ref_dir / "stray.nii.gz").write_bytes(b"not an image either")
    message = _cli_error(capsys, ["-r", str(ref_dir), "-p", str(pred_dir)])
    assert "stray.nii.gz" in message and "cannot read" in message
    (ref_dir / "stray.nii.gz").unlink()
    (pred_dir / "stray.nii.gz").unlink()
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{")
    assert "bad.json" in _cli_error(capsys, ["-r", str(ref_dir), "-p", str(pred_dir),
                                             "--dataset-json", str(bad_json)])
    write_label(pred_dir / "case0.nii.gz", arrays["case0.nii.gz"][1][:, :, :-1])
    assert "size" in _cli_error(capsys, ["-r", str(ref_dir), "-p", str(pred_dir)])
    write_label(pred_dir / "case0.nii.gz", arrays["case0.nii.gz"][1], origin=(10.0, -5.0, 2.5))
    assert "origin" in _cli_error(capsys, ["-r", str(ref_dir), "-p", str(pred_dir)])
    assert not (pred_dir / "summary.json").exists()


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
    from sslunet.errors import InputError

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
