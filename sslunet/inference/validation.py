"""End-of-training validation: predict a fold's validation cases in original geometry, score."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from sslunet.evaluation.evaluate import evaluate_folders
from sslunet.inference.predictor import (
    export_prediction, inference_config, network_predictor, predict_logits,
)
from sslunet.planning.plans import ConfigurationPlan, Plans
from sslunet.preprocessing.storage import load_case
from sslunet.utils.atomic import read_json


def validate_run(network: torch.nn.Module, plans: Plans, config: ConfigurationPlan,
                 pre_dir: Path, val_ids: list[str], run_dir: Path, device: torch.device,
                 tta: bool = True) -> dict:
    """Write ``validation/CASE<ending>`` and ``validation/summary.json`` (real Dice per class).

    Predictions are made from the preprocessed arrays (identical to what prediction from raw
    files computes) and reverted to the original geometry, then compared with the original
    reference labels in ``gt_segmentations/``.
    """
    ending = read_json(pre_dir / "dataset.json")["file_ending"]
    out_dir = run_dir / "validation"
    network.set_deep_supervision(False)
    network.eval()
    predictor = network_predictor(network, device)
    inference = inference_config(config, tta=tta)
    folder = pre_dir / config.data_identifier
    for case_id in tqdm(val_ids, desc="validation", unit="case"):
        data, _, props = load_case(folder, case_id)
        logits = predict_logits([predictor], data, config, plans.num_classes, inference, device)
        export_prediction(logits, props, plans, config, out_dir / f"{case_id}{ending}")
    return evaluate_folders(pre_dir / "gt_segmentations", out_dir, labels=plans.labels,
                            file_ending=ending, output=out_dir, reference_cases=val_ids)
