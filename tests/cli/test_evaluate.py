"""``sslunet_evaluate`` on the command line: a run, and bad input refused with one line (exit 2)
and nothing written.

The folders are written by :mod:`tests.helpers.label_folders`.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from sslunet.cli.evaluate import main as cli_main
from tests.helpers.label_folders import make_folders, write_label
from tests.helpers.paths import REPO


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
