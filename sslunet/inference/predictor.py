"""Predicting one preprocessed case with a network, and exporting in original geometry."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sslunet.dataset.imageio import Geometry, write_array
from sslunet.inference.sliding_window import (
    InferenceConfig, predict_slices_2d, sliding_window_predict,
)
from sslunet.planning.plans import ConfigurationPlan, Plans
from sslunet.preprocessing.preprocessor import revert_probabilities
from sslunet.preprocessing.storage import CaseProperties


def network_predictor(network: nn.Module, device: torch.device, amp: bool = True):
    """Wrap a network as a pure ``(B, C, *patch) -> (B, K, *patch)`` logits function."""
    use_amp = amp and device.type == "cuda"

    @torch.inference_mode()
    def predict(x: torch.Tensor) -> torch.Tensor:
        ctx = torch.autocast("cuda", dtype=torch.float16) if use_amp else nullcontext()
        with ctx:
            out = network(x.to(device, non_blocking=True))
        out = out[0] if isinstance(out, (list, tuple)) else out
        return out.float()

    return predict


def inference_config(config: ConfigurationPlan, step_size: float = 0.5, tta: bool = True,
                     tile_batch_size: int = 4) -> InferenceConfig:
    axes = tuple(range(config.ndim)) if tta else ()
    return InferenceConfig(tuple(config.patch_size), step_size, True, axes, tile_batch_size)


def predict_logits(predictors: list, data: np.ndarray, config: ConfigurationPlan,
                   num_classes: int, inference: InferenceConfig, device: torch.device,
                   progress: bool = False) -> torch.Tensor:
    """Average logits of every predictor (an ensemble of folds) on ``data (C, Z, Y, X)``.

    2d configurations run slice by slice; 3d ones with a 3D sliding window. Returns
    ``(K, Z, Y, X)`` float32 on the CPU.
    """
    image = torch.from_numpy(np.array(data, dtype=np.float32)).to(device)  # copy: memmaps are read-only
    total = None
    for predictor in predictors:
        if config.ndim == 2:
            out = predict_slices_2d(predictor, image, num_classes, inference,
                                    out_device="cpu", progress=progress)
        else:
            out = sliding_window_predict(predictor, image, num_classes, inference,
                                         out_device="cpu", progress=progress)
        total = out if total is None else total + out
    return total / len(predictors)


def geometry_from_properties(props: CaseProperties) -> Geometry:
    size = tuple(reversed(props.original_shape))
    if len(props.sitk_spacing) == 2:
        size = size[:2]
    return Geometry(tuple(props.sitk_spacing), tuple(props.sitk_origin),
                    tuple(props.sitk_direction), size)


def export_prediction(logits: torch.Tensor, props: CaseProperties, plans: Plans,
                      config: ConfigurationPlan, out_file: Path,
                      probabilities_file: Path | None = None) -> np.ndarray:
    """Softmax, revert the preprocessing, argmax, write the label map (and probabilities)."""
    probs = torch.softmax(logits.float(), 0).numpy()
    full = revert_probabilities(probs, props, plans, config)  # (K, *original_shape)
    seg = full.argmax(0).astype(np.uint8)
    write_array(out_file, seg, geometry_from_properties(props))
    if probabilities_file is not None:
        from sslunet.utils.atomic import atomic_path

        with atomic_path(probabilities_file, suffix=".npz") as tmp:
            np.savez_compressed(tmp, probabilities=full.astype(np.float16))
    return seg
