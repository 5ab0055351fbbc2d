"""Predicting preprocessed cases in original geometry and scoring them (validation, test)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tqdm import tqdm

from sslunet.evaluation.api import evaluate_folders
from sslunet.inference.predictor import (
    export_logits,
    inference_config,
    network_predictor,
    predict_logits,
)
from sslunet.plans import ConfigurationPlan, Plans
from sslunet.preprocessing.storage import load_case
from sslunet.utils.atomic import read_json


def predict_and_evaluate(network: torch.nn.Module, plans: Plans, config: ConfigurationPlan,
                         case_folder: Path, case_ids: list[str], out_dir: Path, ref_dir: Path,
                         file_ending: str, device: torch.device, tta: bool = True,
                         desc: str = "predict", save_probabilities: bool = False,
                         amp: bool = True) -> dict:
    """Predict ``case_ids`` from their preprocessed arrays, write ``out_dir/CASE<ending>`` in
    original geometry, and score them against ``ref_dir`` into ``out_dir/summary.json``.

    Predicting from the preprocessed arrays gives the same result as predicting from the raw
    files (the same preprocessing produced them) without redoing it. With
    ``save_probabilities`` each case's class probabilities are kept as ``CASE.npz`` (what
    ensembles of configurations are chosen from; nnU-Net's ``--npz``). ``amp``: mixed
    precision where the device does it natively (as in training).
    """
    network.set_deep_supervision(False)
    network.eval()
    predictor = network_predictor(network, device, amp)
    inference = inference_config(config, tta=tta, device=device)
    for case_id in tqdm(case_ids, desc=desc, unit="case"):
        data, _, props = load_case(case_folder, case_id)
        logits = predict_logits([predictor], data, config, plans.num_classes, inference,
                                device)
        npz = out_dir / f"{case_id}.npz" if save_probabilities else None
        export_logits(logits, props, plans, config, out_dir / f"{case_id}{file_ending}", npz)
    summary = evaluate_folders(ref_dir, out_dir, labels=plans.labels, file_ending=file_ending,
                               output=out_dir, reference_cases=case_ids, verbose=False)
    print(f"{desc}: {dice_line(summary)} ({out_dir / 'summary.json'})", file=sys.stderr)
    return summary


def dice_line(summary: dict) -> str:
    """``"N cases, Dice liver 0.912, spleen 0.801 (mean 0.857)"`` for logs."""
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    classes = ", ".join(f"{name} {fmt(stats['dice']['mean'])}"
                        for name, stats in summary["per_class"].items())
    return (f"{summary['num_cases']} cases, Dice {classes} "
            f"(mean {fmt(summary['foreground_mean']['dice'])})")


def validate_run(network: torch.nn.Module, plans: Plans, config: ConfigurationPlan,
                 pre_dir: Path, val_ids: list[str], run_dir: Path, device: torch.device,
                 tta: bool = True, save_probabilities: bool = False, amp: bool = True) -> dict:
    """End-of-training validation: ``run_dir/validation/`` masks and ``summary.json``
    (real Dice per class against the original labels in ``gt_segmentations/``)."""
    ending = read_json(pre_dir / "dataset.json")["file_ending"]
    return predict_and_evaluate(network, plans, config, pre_dir / config.data_identifier,
                                val_ids, run_dir / "validation", pre_dir / "gt_segmentations",
                                ending, device, tta, desc="validation",
                                save_probabilities=save_probabilities, amp=amp)
