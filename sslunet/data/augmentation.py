"""Training and validation augmentation pipelines on batchgenerators (two-view contrastive
augmentation: :mod:`sslunet.ssl.two_views`).

batchgenerators draws its random numbers from numpy's *global* generator and, for a few
parameters (noise variance, blur sigma), from Python's ``random`` module. Inside background
workers both belong to the worker and are seeded per worker by the loader; in the main process
:func:`global_rng_scope` swaps a private ``RandomState`` in for the duration of a call, so
nothing here depends on, or disturbs, the caller's global random state.
"""

from __future__ import annotations

import math
import random
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose
from batchgenerators.transforms.color_transforms import (
    BrightnessMultiplicativeTransform,
    ContrastAugmentationTransform,
    GammaTransform,
)
from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform
from batchgenerators.transforms.resample_transforms import SimulateLowResolutionTransform
from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform
from batchgenerators.transforms.utility_transforms import NumpyToTensor

ANISOTROPY_THRESHOLD = 3.0  # nnU-Net: dummy-2D when max(patch) / patch[0] exceeds this
SCALE_RANGE = (0.7, 1.4)
ROTATION_3D = (-math.pi / 6, math.pi / 6)  # +-30 degrees
ROTATION_2D = (-math.pi, math.pi)  # +-180 degrees, 2d and dummy-2D (in-plane)


@dataclass(frozen=True)
class SpatialAugmentation:
    """Spatial augmentation settings for one patch size.

    ``rotation`` (radians) is used for every rotation axis: the three axes in 3D, the single
    in-plane angle in 2d and dummy-2D. ``dummy_2d`` means the 3D patch is augmented slice by
    slice in-plane (no rotation or scaling along Z).
    """

    patch_size: tuple[int, ...]
    dummy_2d: bool
    rotation: tuple[float, float]
    scale: tuple[float, float] = SCALE_RANGE


def use_dummy_2d(patch_size: Sequence[int]) -> bool:
    """nnU-Net's rule: a 3D patch much thinner along Z than in-plane is augmented in 2D."""
    return len(patch_size) == 3 and max(patch_size) / patch_size[0] > ANISOTROPY_THRESHOLD


def spatial_augmentation(
    patch_size: Sequence[int], anisotropic: bool | None = None
) -> SpatialAugmentation:
    """Rotation/scaling settings of nnU-Net v2 for ``patch_size``.

    Args:
        patch_size: Final patch size (2 or 3 entries).
        anisotropic: Force (True) or forbid (False) dummy-2D for a 3D patch; None applies
            :func:`use_dummy_2d`. Ignored for 2d patches.
    """
    patch_size = tuple(int(p) for p in patch_size)
    if len(patch_size) not in (2, 3):
        raise ValueError(f"patch_size must have 2 or 3 entries, got {patch_size}")
    dummy = len(patch_size) == 3 and (use_dummy_2d(patch_size) if anisotropic is None else anisotropic)
    rotation = ROTATION_2D if (len(patch_size) == 2 or dummy) else ROTATION_3D
    return SpatialAugmentation(patch_size, dummy, rotation)


def patch_size_before_augmentation(
    patch_size: Sequence[int], anisotropic: bool | None = None
) -> tuple[int, ...]:
    """Size of the patch to read so rotation and scaling of the final patch stay inside it.

    Like nnU-Net's ``get_patch_size``, each rotation axis is considered on its own (the
    combined 3D rotation is not bounded exactly; the rare remainder is filled with padding).
    Unlike it, the in-plane extent is the exact bounding box of the rotated rectangle,
    maximised over all angles up to the largest allowed one (capped at 90 degrees, beyond which
    the box repeats), and the enlargement uses the largest scale factor, because
    batchgenerators multiplies the sampling grid by the factor (factor > 1 reads a larger area).
    Dummy-2D patches are not enlarged along Z.
    """
    aug = spatial_augmentation(patch_size, anisotropic)
    final = np.asarray(aug.patch_size, dtype=float)
    if len(final) == 2:
        planes = [(0, 1)]
    elif aug.dummy_2d:
        planes = [(1, 2)]
    else:
        planes = [(1, 2), (0, 2), (0, 1)]
    max_angle = min(max(abs(a) for a in aug.rotation), math.pi / 2)
    theta = np.linspace(0.0, max_angle, 91)
    cos, sin = np.abs(np.cos(theta)), np.abs(np.sin(theta))
    extent = final.copy()
    for i, j in planes:
        extent[i] = max(extent[i], np.max(final[i] * cos + final[j] * sin))
        extent[j] = max(extent[j], np.max(final[i] * sin + final[j] * cos))
    augmented = sorted({axis for plane in planes for axis in plane})
    extent[augmented] *= max(aug.scale)
    return tuple(int(math.ceil(e - 1e-6)) for e in extent)


def seed_python_random_from_numpy() -> None:
    """Seed Python's ``random`` from numpy's global generator (batchgenerators uses both)."""
    random.seed(int(np.random.randint(0, 2**31 - 1)))


@contextmanager
def global_rng_scope(state: np.random.RandomState) -> Iterator[None]:
    """Let code that uses ``np.random.*`` and ``random.*`` draw from ``state`` (Python's
    generator is seeded from it); restore both global states afterwards."""
    saved_np, saved_py = np.random.get_state(), random.getstate()
    np.random.set_state(state.get_state())
    try:
        seed_python_random_from_numpy()
        yield
    finally:
        state.set_state(np.random.get_state())
        np.random.set_state(saved_np)
        random.setstate(saved_py)


class SeedPythonRandom(AbstractTransform):
    """First step of every pipeline run in workers: batchgenerators' workers seed only numpy,
    so Python's ``random`` (inherited from the parent by fork) is re-seeded from it per batch."""

    def __call__(self, **data_dict):
        seed_python_random_from_numpy()
        return data_dict


class FinalizeSeg(AbstractTransform):
    """Map seg -1 (outside the nonzero mask, padding) to background 0 and cast to int16.

    This is nnU-Net's ``RemoveLabelTransform(-1, 0)``, made a no-op for batches without seg
    (unlabeled data), plus a cast: spatial augmentation returns float labels, and a fixed
    integer dtype lets the trainer call ``.long()`` on the device.
    """

    def __call__(self, **data_dict):
        seg = data_dict.get("seg")
        if seg is not None:
            data_dict["seg"] = np.where(seg < 0, 0, seg).astype(np.int16)
        return data_dict


class _FoldDepthIntoChannels(AbstractTransform):
    """(B, C, Z, Y, X) -> (B, C*Z, Y, X) so a 2D spatial transform moves every slice alike."""

    def __call__(self, **data_dict):
        for key in ("data", "seg"):
            arr = data_dict.get(key)
            if arr is not None:
                data_dict[f"_{key}_shape_3d"] = arr.shape
                b, c, z, y, x = arr.shape
                data_dict[key] = arr.reshape(b, c * z, y, x)  # (B, C*Z, Y, X)
        return data_dict


class _UnfoldDepthFromChannels(AbstractTransform):
    """Inverse of :class:`_FoldDepthIntoChannels` (the in-plane size may have changed)."""

    def __call__(self, **data_dict):
        for key in ("data", "seg"):
            shape = data_dict.pop(f"_{key}_shape_3d", None)
            if shape is not None:
                arr = data_dict[key]
                b, c, z = shape[:3]
                data_dict[key] = arr.reshape(b, c, z, *arr.shape[2:])  # (B, C, Z, Y', X')
        return data_dict


def _spatial_transform(aug: SpatialAugmentation, do_elastic: bool) -> SpatialTransform:
    zero = (0.0, 0.0)
    in_plane_only = len(aug.patch_size) == 2 or aug.dummy_2d
    return SpatialTransform(
        aug.patch_size[1:] if aug.dummy_2d else aug.patch_size,
        patch_center_dist_from_border=None,
        random_crop=False,  # the sampler already placed the patch; crop its centre
        do_elastic_deform=do_elastic,
        alpha=(0.0, 200.0),
        sigma=(9.0, 13.0),
        p_el_per_sample=0.2,
        do_rotation=True,
        angle_x=aug.rotation,
        angle_y=zero if in_plane_only else aug.rotation,
        angle_z=zero if in_plane_only else aug.rotation,
        p_rot_per_sample=0.2,
        do_scale=True,
        scale=aug.scale,
        p_scale_per_sample=0.2,
        border_mode_data="constant",
        border_cval_data=0,
        order_data=3,
        border_mode_seg="constant",
        border_cval_seg=-1,
        order_seg=1,
    )


def _nnunet_intensity_transforms(ignore_axes: tuple[int, ...] | None) -> list[AbstractTransform]:
    return [
        GaussianNoiseTransform(noise_variance=(0.0, 0.1), p_per_sample=0.1),
        GaussianBlurTransform(
            (0.5, 1.0), different_sigma_per_channel=True, p_per_sample=0.2, p_per_channel=0.5
        ),
        BrightnessMultiplicativeTransform(multiplier_range=(0.75, 1.25), p_per_sample=0.15),
        ContrastAugmentationTransform(contrast_range=(0.75, 1.25), p_per_sample=0.15),
        SimulateLowResolutionTransform(
            zoom_range=(0.5, 1.0),
            per_channel=True,
            p_per_channel=0.5,
            order_downsample=0,
            order_upsample=3,
            p_per_sample=0.25,
            ignore_axes=ignore_axes,
        ),
        GammaTransform((0.7, 1.5), invert_image=True, per_channel=True, retain_stats=True, p_per_sample=0.1),
        GammaTransform((0.7, 1.5), invert_image=False, per_channel=True, retain_stats=True, p_per_sample=0.3),
    ]


def training_transforms(
    patch_size: Sequence[int],
    ndim: int | None = None,
    anisotropic: bool | None = None,
    mirror_axes: Sequence[int] | None = None,
    do_elastic: bool = False,
) -> Compose:
    """nnU-Net v2's training augmentation (Isensee et al., Nature Methods 2021).

    Spatial (p 0.2 rotation, p 0.2 scaling in (0.7, 1.4), optional elastic p 0.2) with a centre
    crop from the larger sampled patch to ``patch_size``; Gaussian noise p 0.1; blur p 0.2;
    brightness x(0.75, 1.25) p 0.15; contrast p 0.15; low-resolution simulation (0.5-1) p 0.25
    (not along Z in dummy-2D); gamma with inversion p 0.1 and without p 0.3; mirroring; seg -1
    -> 0; numpy -> torch. Input batches come from :class:`~sslunet.data.sampling.PatchDataLoader`
    with ``patch_size_before_aug = patch_size_before_augmentation(patch_size, anisotropic)``.

    Args:
        patch_size: Final patch size (2 or 3 entries).
        ndim: Optional check that ``len(patch_size) == ndim``.
        anisotropic: Dummy-2D switch for 3D patches; None decides by :func:`use_dummy_2d`.
        mirror_axes: Spatial axes to mirror (each with p 0.5); None = all, ``()`` = none.
        do_elastic: Add elastic deformation (nnU-Net v1 ranges: alpha 0-200, sigma 9-13).

    Returns:
        A Compose mapping ``{"data": (B, C, *read), "seg": (B, 1, *read)}`` numpy arrays to
        ``data`` float32 tensor (B, C, *patch_size) and ``seg`` int16 tensor (B, 1, *patch_size).
    """
    aug = spatial_augmentation(patch_size, anisotropic)
    if ndim is not None and ndim != len(aug.patch_size):
        raise ValueError(f"patch_size {aug.patch_size} does not match ndim={ndim}")
    if mirror_axes is None:
        mirror_axes = tuple(range(len(aug.patch_size)))
    transforms: list[AbstractTransform] = []
    if aug.dummy_2d:
        transforms.append(_FoldDepthIntoChannels())
    transforms.append(_spatial_transform(aug, do_elastic))
    if aug.dummy_2d:
        transforms.append(_UnfoldDepthFromChannels())
    transforms += _nnunet_intensity_transforms((0,) if aug.dummy_2d else None)
    if len(mirror_axes):
        transforms.append(MirrorTransform(tuple(mirror_axes)))
    transforms += [FinalizeSeg(), NumpyToTensor()]
    return Compose(transforms)


def validation_transforms() -> Compose:
    """No augmentation: seg -1 -> 0 (int16) and numpy -> torch."""
    return Compose([FinalizeSeg(), NumpyToTensor()])
