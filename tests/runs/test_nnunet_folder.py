"""A model folder exported as an nnU-Net v2 results folder (``sslunet_export -m --to-nnunet``).

The round trip through nnU-Net itself needs an environment with nnunetv2: set
``SSLUNET_NNUNET_PYTHON`` to its Python (e.g. a separate venv made with ``pip install
nnunetv2==2.8.1``); without it that test is skipped and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from sslunet.errors import InputError
from sslunet.inference.api import PredictOptions, predict_folder
from sslunet.runs.nnunet_folder import export_model_folder
from tests.helpers.cli import refused, run_cli
from tests.helpers.datasets import DATASET, trained_home

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NNUNET_PYTHON = os.environ.get("SSLUNET_NNUNET_PYTHON")


def test_export_writes_what_nnunets_predictor_reads(tmp_path_factory, tmp_path):
    paths, run_dir = trained_home(tmp_path_factory, tmp_path / "home")
    target = export_model_folder(run_dir.parent, tmp_path / "nnres")
    assert target == tmp_path / "nnres" / DATASET / "nnUNetTrainer__nnUNetPlans__2d"
    plans = json.loads((target / "plans.json").read_text())
    arch = plans["configurations"]["2d"]["architecture"]
    assert arch["network_class_name"].endswith("PlainConvUNet")
    assert arch["arch_kwargs"]["conv_op"] == "torch.nn.modules.conv.Conv2d"
    assert json.loads((target / "dataset.json").read_text())["labels"]["right"] == 2
    ckpt = torch.load(target / "fold_0" / "checkpoint_final.pth", weights_only=True)
    assert ckpt["trainer_name"] == "nnUNetTrainer" and ckpt["init_args"]["configuration"] == "2d"
    assert ckpt["inference_allowed_mirroring_axes"] == (0, 1)
    ours = torch.load(run_dir / "checkpoint_final.pt", weights_only=True)["network_weights"]
    assert set(ckpt["network_weights"]) > {"decoder.seg_layers.0.weight"}
    with pytest.raises(InputError, match="never overwrite"):
        export_model_folder(run_dir.parent, tmp_path / "nnres")
    with pytest.raises(InputError, match="not a model folder"):
        export_model_folder(tmp_path, tmp_path / "other")
    assert len(ours) < len(ckpt["network_weights"])  # nnU-Net's duplicates are there too


def test_cli_export_and_its_refusals(tmp_path_factory, tmp_path):
    _, run_dir = trained_home(tmp_path_factory, tmp_path / "home")
    ok = run_cli("export", ["-m", run_dir.parent, "--to-nnunet", tmp_path / "nnres"],
                 tmp_path / "home")
    assert ok.returncode == 0 and "nnUNetv2_predict -d Dataset042_Tiny -c 2d" in ok.stdout
    refused(run_cli("export", ["-m", run_dir.parent, "--to-nnunet", tmp_path / "nnres"],
                    tmp_path / "home"), "already exists")
    refused(run_cli("export", ["-m", run_dir.parent], tmp_path / "home"), "--to-nnunet",
            own=False)


def _masks(folder: Path, cases) -> dict[str, np.ndarray]:
    return {c: sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{c}.nii.gz")))
            for c in cases}


@pytest.mark.slow
@pytest.mark.skipif(not NNUNET_PYTHON, reason="set SSLUNET_NNUNET_PYTHON to a Python with "
                                              "nnunetv2 to run the model in nnU-Net itself")
@pytest.mark.parametrize("tta", [False, True])
def test_nnunet_predicts_the_masks_sslunet_predicts(tmp_path_factory, tmp_path, tta):
    paths, run_dir = trained_home(tmp_path_factory, tmp_path / "home")
    results = tmp_path / "nnres"
    export_model_folder(run_dir.parent, results)
    cases = ["case_000", "case_001", "case_002"]
    inputs = tmp_path / "in"
    inputs.mkdir()
    for c in cases:
        shutil.copy(paths.raw / DATASET / "imagesTr" / f"{c}_0000.nii.gz", inputs)
    env = {**os.environ, "nnUNet_results": str(results), "nnUNet_raw": str(tmp_path / "r"),
           "nnUNet_preprocessed": str(tmp_path / "p"), "OMP_NUM_THREADS": "1"}
    cmd = [str(Path(NNUNET_PYTHON).parent / "nnUNetv2_predict"), "-i", str(inputs), "-o",
           str(tmp_path / "nn"), "-d", DATASET, "-c", "2d", "-f", "0", "-device", "cpu",
           "-npp", "1", "-nps", "1", *([] if tta else ["--disable_tta"])]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    predict_folder(paths, PredictOptions(inputs, tmp_path / "ss", model=run_dir.parent,
                                         folds=("0",), tta=tta, postprocessing=False,
                                         device="cpu", save_probabilities=True,
                                         num_processes=0, progress=False))
    theirs, ours = _masks(tmp_path / "nn", cases), _masks(tmp_path / "ss", cases)
    for c in cases:
        differ = theirs[c] != ours[c]
        if differ.any():  # only where two classes tie: nnU-Net sums tile logits in float16
            probs = np.sort(np.load(tmp_path / "ss" / f"{c}.npz")["probabilities"], axis=0)
            assert (probs[-1] - probs[-2])[differ].max() < 0.02, c
        assert differ.mean() < 1e-3, c
