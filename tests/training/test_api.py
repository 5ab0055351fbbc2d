"""Tests for sslunet.training.api (fine-tuning end to end): the labelled-case selection, the run
folder's contents and a fine-tuning recipe (freezing, per-part learning rates) from a checkpoint.

Runs use the tiny dataset of :mod:`tests.helpers.datasets` (a few seconds each on 2 CPU cores).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from sslunet.errors import InputError
from sslunet.runs.checkpoint import load_checkpoint
from sslunet.training.api import FinetuneOptions, finetune
from sslunet.training.trainer import Trainer
from tests.helpers.datasets import DATASET, tiny_home, tiny_overrides, trained_home


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_labeled_cases_json_reproducible_and_nested(tmp_path_factory, tmp_path, monkeypatch):
    paths = tiny_home(tmp_path_factory, tmp_path / "home")
    monkeypatch.setattr(Trainer, "fit", lambda self, resume=False: None)  # selection only

    def chosen(n, seed):
        opts = FinetuneOptions(DATASET, "2d", num_labeled=n, seed=seed, validate=False,
                               overrides=tiny_overrides())
        return json.loads((finetune(paths, opts) / "labeled_cases.json").read_text())

    first, again = chosen(2, 0), chosen(2, 0)
    assert first == again and len(first["cases"]) == 2
    assert not set(first["cases"]) & set(first["validation"])
    assert set(first["cases"]) < set(chosen(3, 0)["cases"])
    draws = {tuple(chosen(2, seed)["cases"]) for seed in range(4)}
    assert len(draws) > 1
    with pytest.raises(InputError, match="exceeds"):
        chosen(5, 0)  # fold 0 trains on 4 cases


def test_run_folder_contents(tmp_path_factory, tmp_path):
    paths, run_dir = trained_home(tmp_path_factory, tmp_path / "home")
    for name in ("checkpoint_final.pt", "checkpoint_best.pt", "metrics.jsonl", "training.log",
                 "progress.png", "labeled_cases.json", "run_config.json",
                 "validation/summary.json"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "checkpoint_latest.pt").exists()
    assert (run_dir.parent / "plans.json").is_file()
    records = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    for r in records:
        assert {"epoch", "train_loss", "val_loss", "pseudo_dice", "lr", "epoch_time"} <= set(r)
        assert 0 <= r["pseudo_dice"] <= 1 and np.isfinite(r["train_loss"])
    assert records[1]["lr"] < records[0]["lr"]
    assert (run_dir / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = (run_dir / "training.log").read_text()
    assert "epoch 1/2" in log and "epoch 2/2" in log
    splits = json.loads((paths.preprocessed / DATASET / "splits.json").read_text())
    chosen = json.loads((run_dir / "labeled_cases.json").read_text())
    assert chosen["cases"] == splits[0]["train"] and chosen["validation"] == splits[0]["val"]
    run_config = json.loads((run_dir / "run_config.json").read_text())
    assert run_config["training"]["epochs"] == 2 and run_config["options"]["dataset"] == DATASET

    summary = json.loads((run_dir / "validation/summary.json").read_text())
    assert set(summary["per_class"]) == {"left", "right"}
    assert all(0 <= c["dice"]["mean"] <= 1 for c in summary["per_class"].values())
    for case in splits[0]["val"]:
        pred = sitk.ReadImage(str(run_dir / "validation" / f"{case}.nii.gz"))
        ref = sitk.ReadImage(str(paths.raw / DATASET / "labelsTr" / f"{case}.nii.gz"))
        assert pred.GetSize() == ref.GetSize()
        for attr in ("GetSpacing", "GetOrigin", "GetDirection"):
            assert np.allclose(getattr(pred, attr)(), getattr(ref, attr)(), atol=1e-6), attr
        assert set(np.unique(sitk.GetArrayFromImage(pred))) <= {0, 1, 2}
    # the post-processing decision of the folds finished so far is stored with the model
    post = json.loads((run_dir.parent / "postprocessing.json").read_text())
    assert post["folds"] == ["0"] and post["num_cases"] == len(splits[0]["val"])
    assert post["dice"]["raw"]["foreground"] == pytest.approx(
        np.mean([c["dice"]["mean"] for c in summary["per_class"].values()]))
    assert "post-processing:" in log


def test_finetune_with_recipe_freezes_resumes_and_records(tmp_path_factory, tmp_path):
    """End to end on the tiny dataset: from a checkpoint, encoder frozen for epoch 1, loaded
    tensors at 0.1 x lr; the recipe is recorded and the frozen encoder really did not move."""
    paths, run_dir = trained_home(tmp_path_factory, tmp_path / "home")
    ckpt = run_dir / "checkpoint_final.pt"
    opts = FinetuneOptions(DATASET, "2d", 0, str(ckpt), validate=False,
                           overrides=tiny_overrides(epochs=2, freeze_encoder_epochs=1,
                                                    pretrained_lr_scale=0.1),
                           model_dir=str(tmp_path / "model"))
    out = finetune(paths, opts)
    recorded = json.loads((out / "run_config.json").read_text())["training"]
    assert recorded["freeze_encoder_epochs"] == 1 and recorded["pretrained_lr_scale"] == 0.1
    log = (out / "training.log").read_text()
    assert "encoder_pretrained: frozen from epoch 1" in log
    assert "encoder_pretrained: unfrozen from epoch 2" in log
    final = torch.load(out / "checkpoint_final.pt", weights_only=True)
    groups = final["optimizer"]["param_groups"]
    assert {g["name"]: g["lr_scale"] for g in groups}["encoder_pretrained"] == 0.1


def test_the_same_run_twice_gives_bit_identical_weights(tmp_path_factory, tmp_path):
    """Seeds fix everything that is drawn (labelled subset, head init, batches, augmentation,
    worker streams): two identical runs on one machine end with the same weights, bit for bit.
    (Across CPU models, kernels sum in other orders and short runs diverge: see docs/payoff.md.)"""
    paths = tiny_home(tmp_path_factory, tmp_path / "home")
    weights = []
    for k in range(2):
        run_dir = finetune(paths, FinetuneOptions(
            DATASET, "2d", validate=False, model_dir=str(tmp_path / f"model{k}"),
            overrides=tiny_overrides(epochs=2, iters_per_epoch=3, num_workers=1)))
        weights.append(load_checkpoint(run_dir / "checkpoint_final.pt")["network_weights"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
