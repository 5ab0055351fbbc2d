"""Small shape helpers shared by the image-level pretext code (corruptions, masks, regions)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def per_axis(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    """``N`` (every axis) or one positive int per axis -> ``ndim`` positive ints."""
    out = (int(value),) * ndim if np.isscalar(value) else tuple(int(v) for v in value)
    if len(out) != ndim or min(out) < 1:
        raise ValueError(f"{name} must be a positive int or {ndim} positive ints, got {value!r}")
    return out


def check_channels_first(image: np.ndarray) -> None:
    """Refuse anything that is not one ``(C, *spatial)`` image."""
    if image.ndim < 2:
        raise ValueError(f"image must be (C, *spatial), got shape {image.shape}")
