"""``sslunet_synth`` on the command line (in process): an existing dataset folder is refused,
``--overwrite`` replaces it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from sslunet.cli.synth import main as synth_main
from sslunet.dataset.synthetic import (SynthConfig, generate_dataset)
from sslunet.errors import InputError


def _array(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_existing_folder_is_refused_and_overwrite_replaces_it(tmp_path, capsys):
    args = ["-o", str(tmp_path), "--labeled", "1", "--unlabeled", "0", "--test", "0", "-np", "1"]
    synth_main(args)
    folder = tmp_path / "Dataset001_Liver"
    assert "Dataset001_Liver" in capsys.readouterr().out
    first = _array(folder / "imagesTr/liver_000_0000.nii.gz")
    (folder / "user_notes.txt").write_text("keep me unless overwriting")

    with pytest.raises(SystemExit) as exit_info:
        synth_main(args + ["--seed", "5"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Dataset001_Liver" in err and "already exists" in err and "Traceback" not in err
    with pytest.raises(InputError, match="already exists"):
        generate_dataset(tmp_path, SynthConfig(num_labeled=1, num_unlabeled=0, num_test=0))
    assert (folder / "user_notes.txt").exists()
    assert np.array_equal(first, _array(folder / "imagesTr/liver_000_0000.nii.gz"))

    synth_main(args + ["--seed", "5", "--overwrite"])
    assert not (folder / "user_notes.txt").exists()
    second = _array(folder / "imagesTr/liver_000_0000.nii.gz")
    assert second.shape != first.shape or not np.array_equal(first, second)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset001_Liver"]
    assert json.loads((folder / "dataset.json").read_text())["generator"]["seed"] == 5
