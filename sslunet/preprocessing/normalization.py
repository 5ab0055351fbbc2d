"""Intensity normalisation schemes, chosen per channel by ``dataset.json`` channel names.

MR channels get per-image z-scoring (nnU-Net's ``ZScoreNormalization``): MR intensities have no
absolute scale, so each image is standardised by its own mean and standard deviation, inside
the nonzero mask when the plan says cropping removed much background (``use_mask_for_norm``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from sslunet.plans import ChannelIntensityStats

_EPS = 1e-8


def zscore(x: np.ndarray, mask: np.ndarray | None, stats: ChannelIntensityStats) -> np.ndarray:
    if mask is not None and mask.any():
        vals = x[mask]
        out = (x - vals.mean()) / max(float(vals.std()), _EPS)
        out[~mask] = 0.0  # background stays exactly zero, so the mask survives resampling
        return out
    return (x - x.mean()) / max(float(x.std()), _EPS)


def ct(x: np.ndarray, mask: np.ndarray | None, stats: ChannelIntensityStats) -> np.ndarray:
    """Dataset-wide clipping and z-scoring with the fingerprint's foreground statistics."""
    x = np.clip(x, stats.percentile_00_5, stats.percentile_99_5)
    return (x - stats.mean) / max(stats.std, _EPS)


def nonorm(x: np.ndarray, mask, stats) -> np.ndarray:
    return x


def rescale_to_0_1(x: np.ndarray, mask, stats) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / max(hi - lo, _EPS)


NORMALIZERS: dict[str, Callable] = {
    "zscore": zscore, "ct": ct, "nonorm": nonorm, "rescale_to_0_1": rescale_to_0_1,
}


def normalize(data: np.ndarray, nonzero_mask: np.ndarray, schemes, use_mask, stats) -> np.ndarray:
    """Normalise a (C, z, y, x) image in place per channel and return it (float32)."""
    data = data.astype(np.float32, copy=False)
    for c in range(data.shape[0]):
        mask = nonzero_mask if use_mask[c] else None
        data[c] = NORMALIZERS[schemes[c]](data[c], mask, stats[c])
    return data
