"""Inference: sliding-window prediction of whole images from a patch-wise predictor."""

from sslunet.inference.sliding_window import (
    InferenceConfig,
    Predictor,
    compute_tile_starts,
    gaussian_importance_map,
    predict_slices_2d,
    sliding_window_predict,
)

__all__ = [
    "InferenceConfig",
    "Predictor",
    "compute_tile_starts",
    "gaussian_importance_map",
    "predict_slices_2d",
    "sliding_window_predict",
]
