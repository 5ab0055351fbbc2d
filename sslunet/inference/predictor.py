"""Predicting one preprocessed case with a network, and exporting in original geometry."""

from __future__ import annotations

from math import prod
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from sslunet.dataset.imageio import Geometry, write_array
from sslunet.dataset.labels import foreground_labels
from sslunet.inference.postprocessing import PostprocessingPlan, apply_postprocessing
from sslunet.inference.sliding_window import (
    InferenceConfig,
    Predictor,
    predict_slices_2d,
    sliding_window_predict,
)
from sslunet.plans import ConfigurationPlan, Plans
from sslunet.preprocessing.preprocessor import revert_logits
from sslunet.preprocessing.storage import CaseProperties
from sslunet.utils.acceleration import autocast, autocast_dtype
from sslunet.utils.atomic import atomic_path


def network_predictor(network: nn.Module, device: torch.device, amp: bool = True):
    """Wrap a network as a pure ``(B, C, *patch) -> (B, K, *patch)`` float32 logits function.

    ``amp``: mixed precision where the device does it natively (fp16 on CUDA, bf16 on CPUs
    with AMX; see :mod:`sslunet.utils.acceleration`).
    """
    dtype = autocast_dtype(device, amp, training=False)

    @torch.inference_mode()
    def predict(x: torch.Tensor) -> torch.Tensor:
        with autocast(device, dtype):
            out = network(x.to(device, non_blocking=True))
        out = out[0] if isinstance(out, (list, tuple)) else out
        return out.float()

    return predict


# Tiles per network call on a CPU, in voxels: 2 tiles of 256x256. A CPU runs a batch slower per
# tile as it grows out of the caches; the CMR 2d network (256x256, 32-512 features) on a 2-core
# Xeon took per tile at batch 1/2/4/8: 145/143/161/185 ms in fp32, 87/73/79/92 ms in bf16
# (issue 12; nnU-Net v2 predicts one tile per call).
CPU_TILE_VOXELS = 2 * 256 * 256


def tile_batch_size(config: ConfigurationPlan, device: torch.device) -> int:
    """Tiles per network call: the training batch on a GPU (it fits with gradients, so it fits
    without), on a CPU as many as stay within :data:`CPU_TILE_VOXELS` (at least one)."""
    if device.type == "cuda":
        return max(1, config.batch_size)
    return max(1, CPU_TILE_VOXELS // prod(config.patch_size))


def inference_config(config: ConfigurationPlan, step_size: float = 0.5, tta: bool = True,
                     device: torch.device = torch.device("cpu")) -> InferenceConfig:
    """nnU-Net's sliding window (Gaussian weights, all axes mirrored for TTA), batched for
    ``device``: mirrorings share one network call on a GPU, not on a CPU."""
    axes = tuple(range(config.ndim)) if tta else ()
    return InferenceConfig(tuple(config.patch_size), step_size, True, axes,
                           tile_batch_size(config, device), batch_mirrors=device.type == "cuda")


def _accumulation_device(device: torch.device, spatial: Sequence[int], num_classes: int
                         ) -> torch.device:
    """Accumulate on the GPU when the buffers take under half its free memory, else the CPU."""
    if device.type != "cuda":
        return device
    # logit and weight sums, one fold's probabilities and the running probability sum
    need = 4 * (3 * num_classes + 1) * prod(spatial)
    free, _ = torch.cuda.mem_get_info(device)
    return device if need < free / 2 else torch.device("cpu")


def predict_logits(predictors: Sequence[Predictor], data: np.ndarray,
                   config: ConfigurationPlan, num_classes: int,
                   inference: InferenceConfig, device: torch.device) -> np.ndarray:
    """Fold-averaged logits of one preprocessed case.

    Each fold's (TTA-averaged) logits are averaged over folds, as nnU-Net v2's predictor does
    within one model, so that a model predicts the same masks here and, exported, in nnU-Net
    (ensembles of several models average probabilities instead, see
    :mod:`sslunet.inference.ensemble`).

    Args:
        predictors: One tile predictor per fold (see ``network_predictor``).
        data: ``(C, Z, Y, X)`` preprocessed image; 2d configurations predict each ``Z`` slice.
        config: The configuration the networks were trained with.
        num_classes: ``K``.
        inference: Tiling, Gaussian weighting, mirroring and tile batching.
        device: Where the tiles are predicted.

    Returns:
        ``(K, Z, Y, X)`` float32 logits on the CPU.
    """
    image = torch.from_numpy(np.array(data, dtype=np.float32)).to(device)  # copy: may be a memmap
    out_device = _accumulation_device(device, image.shape[1:], num_classes)
    window = predict_slices_2d if config.ndim == 2 else sliding_window_predict
    total = None
    for predictor in predictors:
        logits = window(predictor, image, num_classes, inference, out_device=out_device)
        total = logits if total is None else total.add_(logits)
    return (total / len(predictors)).cpu().numpy()


def geometry_from_properties(props: CaseProperties) -> Geometry:
    size = tuple(reversed(props.original_shape))
    if len(props.sitk_spacing) == 2:
        size = size[:2]
    return Geometry(tuple(props.sitk_spacing), tuple(props.sitk_origin),
                    tuple(props.sitk_direction), size)


def export_logits(logits: np.ndarray, props: CaseProperties, plans: Plans,
                  config: ConfigurationPlan, out_file: Path,
                  probabilities_file: Path | None = None,
                  postprocessing: PostprocessingPlan | None = None) -> np.ndarray:
    """Revert logits to the original geometry, softmax, argmax, write the outputs.

    As nnU-Net v2: the logits are resampled (linearly) to the cropped original grid, then
    turned into probabilities; outside the crop box everything is background.

    Args:
        logits: ``(K, *shape_after_resample)`` class logits in preprocessed space.
        props: How the case was preprocessed (geometry, crop box, spacings).
        plans: The plans (for the axis transposition).
        config: The configuration (for the resampling orders).
        out_file: Label map, written with the input image's exact geometry.
        probabilities_file: Optional ``.npz`` receiving ``probabilities``, float16
            ``(K, z, y, x)`` in the original image's numpy axis order (never post-processed).
        postprocessing: the model's post-processing plan, applied to the label map.

    Returns:
        The label map ``(z, y, x)`` uint8 as written. The probabilities file is written
        before the label map, so an existing label map means the case is complete.
    """
    full = revert_logits(logits, props, plans, config)  # (K, *original_shape) probabilities
    seg = full.argmax(0).astype(np.uint8)
    seg = apply_postprocessing(seg, postprocessing, list(foreground_labels(plans.labels).values()))
    if probabilities_file is not None:
        with atomic_path(probabilities_file, suffix=".npz") as tmp:
            np.savez_compressed(tmp, probabilities=full.astype(np.float16))
    write_array(out_file, seg, geometry_from_properties(props))
    return seg
