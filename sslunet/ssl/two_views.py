"""Two augmented views per patch for contrastive objectives, built in the background workers.

Global views (SimCLR, Chaitanya et al.'s G^R/G^D): each view gets its own random resized crop
and intensity augmentation. Local views (Chaitanya et al.'s L^R/L^D): the same geometry, or view
2 mirrored with the flips recorded so the local loss can map view 2's features back
(:func:`unmirror`). Randomness follows :mod:`sslunet.data.augmentation`: one seed per batch from
numpy's global generator, which the loader seeds per worker.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose
from batchgenerators.transforms.color_transforms import (
    BrightnessMultiplicativeTransform,
    ContrastAugmentationTransform,
    GammaTransform,
)
from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
from batchgenerators.transforms.utility_transforms import NumpyToTensor

from sslunet.data.augmentation import global_rng_scope


def view_intensity_transforms() -> Compose:
    """Per-view intensity augmentation for contrastive learning.

    SimCLR (Chen et al., ICML 2020) applies colour jitter with p 0.8 and blur with p 0.5; MR
    has no colour, so following Chaitanya et al. (NeurIPS 2020), who used brightness and
    contrast, we use: brightness x(0.6, 1.4) p 0.8, contrast (0.6, 1.4) p 0.8, gamma (0.7, 1.5)
    p 0.5, Gaussian noise (variance 0-0.1) p 0.5, blur sigma (0.5, 1.5) p 0.5. The ranges and
    probabilities are our choice (stronger than nnU-Net's, so that views actually differ).
    """
    return Compose(
        [
            BrightnessMultiplicativeTransform(multiplier_range=(0.6, 1.4), p_per_sample=0.8),
            ContrastAugmentationTransform(contrast_range=(0.6, 1.4), p_per_sample=0.8),
            GammaTransform((0.7, 1.5), per_channel=True, retain_stats=True, p_per_sample=0.5),
            GaussianNoiseTransform(noise_variance=(0.0, 0.1), p_per_sample=0.5),
            GaussianBlurTransform((0.5, 1.5), p_per_sample=0.5),
        ]
    )


def resize_crop_axis(
    arr: np.ndarray, axis: int, start: int, length: int, out_len: int
) -> np.ndarray:
    """Linearly resample ``arr[start:start+length]`` along ``axis`` to ``out_len`` samples.

    Sample centres are aligned (half-pixel convention), so a full-length crop resized to its
    own length is the identity.
    """
    pos = start + (np.arange(out_len) + 0.5) * (length / out_len) - 0.5
    pos = np.clip(pos, start, start + length - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, start + length - 1)
    shape = [1] * arr.ndim
    shape[axis] = out_len
    w = (pos - i0).reshape(shape).astype(np.float32)  # broadcast along ``axis``
    return np.take(arr, i0, axis=axis) * (1 - w) + np.take(arr, i1, axis=axis) * w


def random_resized_crop(
    sample: np.ndarray,
    rng: np.random.Generator,
    crop_fraction: tuple[float, float],
    crop_axes: Sequence[int],
) -> np.ndarray:
    """Crop a random box (each axis in ``crop_axes`` to a fraction in ``crop_fraction``, other
    axes whole) from ``sample`` (C, *spatial) and resize it back to the input shape."""
    out = sample
    for axis in crop_axes:
        n = sample.shape[axis + 1]
        length = max(1, int(round(n * rng.uniform(*crop_fraction))))
        start = int(rng.integers(0, n - length + 1))
        out = resize_crop_axis(out, axis + 1, start, length, n)
    return out.astype(np.float32, copy=False)


def make_two_views(
    batch: dict,
    rng: np.random.Generator,
    crop_fraction: tuple[float, float] | None = (0.5, 1.0),
    crop_axes: Sequence[int] | None = None,
    intensity: AbstractTransform | None = None,
    mirror_view2: bool = False,
) -> dict:
    """Two independently augmented views of each patch (SimCLR-style global views).

    Each view gets its own random crop of ``crop_fraction`` of every axis in ``crop_axes``
    (default: the two in-plane axes, as in Chaitanya et al.'s crop-and-resize of 2D slices),
    resized back to the patch, then its own draw of :func:`view_intensity_transforms`.

    Args:
        batch: ``{"data": (B, C, *patch) array, ...}``; ``data`` and ``seg`` are replaced by the
            views, other keys (``keys``) are kept.
        rng: Source of all randomness of this call.
        crop_fraction: (min, max) fraction per cropped axis; None = no crop (same geometry).
        crop_axes: Spatial axes to crop; None = the last two.
        intensity: Intensity transform applied to each view; None = view_intensity_transforms().
        mirror_view2: also mirror view 2 along each of ``crop_axes`` with p 0.5 (per image and
            axis), recorded as ``view2_flips`` (B, len(crop_axes)) uint8 so a local loss can map
            view 2's feature maps back onto view 1's (see :func:`unmirror`).

    Returns:
        The dict with ``data_view1`` and ``data_view2``, float32 (B, C, *patch) each.
    """
    data = np.asarray(batch["data"], dtype=np.float32)
    n_spatial = data.ndim - 2
    crop_axes = tuple(range(n_spatial))[-2:] if crop_axes is None else tuple(crop_axes)
    intensity = view_intensity_transforms() if intensity is None else intensity
    out = {k: v for k, v in batch.items() if k not in ("data", "seg")}
    for name in ("data_view1", "data_view2"):
        view = data.copy()
        if crop_fraction is not None:
            view = np.stack([random_resized_crop(s, rng, crop_fraction, crop_axes) for s in view])
        state = np.random.RandomState(int(rng.integers(2**31 - 1)))
        with global_rng_scope(state):
            out[name] = intensity(data=view)["data"].astype(np.float32, copy=False)
    if mirror_view2:
        flips = (rng.random((data.shape[0], len(crop_axes))) < 0.5).astype(np.uint8)
        view2 = out["data_view2"]
        for b in range(data.shape[0]):
            axes = tuple(a + 1 for a, f in zip(crop_axes, flips[b]) if f)  # sample (C, *patch)
            if axes:
                view2[b] = np.flip(view2[b], axes)
        out["view2_flips"] = flips
    return out


def unmirror(features, flips, num_axes: int):
    """Undo :func:`make_two_views`' mirroring on view 2's feature maps.

    Args:
        features: torch tensor (B, C, *S) computed from ``data_view2``.
        flips: (B, num_axes) 0/1, ``view2_flips`` of the batch.
        num_axes: how many trailing spatial axes were mirror candidates (``len(crop_axes)``).

    Returns:
        (B, C, *S): location x then shows the anatomy at location x of view 1 (up to the
        network's sub-pixel grid offset at that resolution).
    """
    out = features.clone()
    first = features.ndim - num_axes
    for b in range(features.shape[0]):
        dims = [first + i for i in range(num_axes) if int(flips[b, i])]
        if dims:
            out[b] = features[b].flip([d - 1 for d in dims])  # features[b] is (C, *S)
    return out


def intensity_only_two_views(
    batch: dict, rng: np.random.Generator, intensity: AbstractTransform | None = None
) -> dict:
    """Two views with identical geometry and independent intensity augmentation.

    For the local (voxel/feature-map level) contrastive loss of Chaitanya et al. (NeurIPS
    2020), where the same position must correspond to the same anatomy in both views.
    """
    return make_two_views(batch, rng, crop_fraction=None, intensity=intensity)


class TwoViewTransform(AbstractTransform):
    """batchgenerators wrapper of :func:`make_two_views` for background workers.

    Draws one seed per batch from numpy's global generator, which the loader seeds per worker
    (or scopes per call in the main process), then uses a private Generator from that seed.
    """

    def __init__(
        self,
        crop_fraction: tuple[float, float] | None = (0.5, 1.0),
        crop_axes: Sequence[int] | None = None,
        mirror_view2: bool = False,
    ):
        self.crop_fraction = crop_fraction
        self.crop_axes = crop_axes
        self.mirror_view2 = mirror_view2
        self.intensity = view_intensity_transforms()

    def __call__(self, **data_dict):
        rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))
        return make_two_views(data_dict, rng, self.crop_fraction, self.crop_axes, self.intensity,
                              self.mirror_view2)


def contrastive_view_transforms(
    crop_fraction: tuple[float, float] | None = (0.5, 1.0), crop_axes: Sequence[int] | None = None,
    mirror_view2: bool = False,
) -> Compose:
    """Two views per patch as torch tensors ``data_view1``/``data_view2`` (B, C, *patch).

    ``crop_fraction=None`` gives views with the same geometry for local losses; with
    ``mirror_view2`` view 2 is also mirrored (recorded in ``view2_flips``).
    """
    return Compose([TwoViewTransform(crop_fraction, crop_axes, mirror_view2), NumpyToTensor()])
