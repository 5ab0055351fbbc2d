"""Resampling images and label maps between spacings (and back, at prediction time).

Conventions follow nnU-Net v2 (anchors note §2b, step 11): images with cubic splines, label maps
one label at a time with linear interpolation ("linear per label": each label's indicator is
interpolated and a voxel takes the label whose indicator exceeds 0.5, later labels winning),
and for anisotropic data (max/min spacing > 3) the coarse axis is handled separately with
nearest neighbour, so that thick slices are never blended into each other.

Sample positions follow the "pixel centres map to pixel centres" convention (as
``skimage.transform.resize``): output voxel ``i`` of ``n_out`` samples input coordinate
``(i + 0.5) * n_in / n_out - 0.5``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from sslunet.errors import InputError

# Largest resampled image accepted (voxels per channel: 32 GiB as float32). Only a spacing far
# from the target (a wrong header) gets there; resampling would exhaust any machine's memory.
MAX_RESAMPLED_VOXELS = 2 ** 33


def new_shape(shape, spacing, target_spacing) -> tuple[int, ...]:
    """Voxel counts after resampling ``shape`` from ``spacing`` to ``target_spacing``."""
    return tuple(int(round(s * sp / tsp)) for s, sp, tsp in
                 zip(shape, spacing, target_spacing))


def checked_new_shape(shape_t, spacing_t, target, what: str, path=None,
                      full_shape_t=None) -> tuple[int, ...]:
    """:func:`new_shape` of ``shape_t`` (at least 1 voxel per axis), after checking the whole
    image (``full_shape_t``, default ``shape_t``) against absurd resampling.

    The whole image resampled to ``target`` must keep at least one voxel per axis and at most
    :data:`MAX_RESAMPLED_VOXELS`; otherwise an :class:`InputError` naming ``path`` (``what``
    says which case and which target). A crop box thinner than one target voxel is kept as
    one voxel rather than refused.
    """
    full = new_shape(shape_t if full_shape_t is None else full_shape_t, spacing_t, target)
    voxels = int(np.prod(full, dtype=np.float64))
    if min(full) < 1 or voxels > MAX_RESAMPLED_VOXELS:
        fmt = lambda v: "(" + ", ".join(f"{x:.4g}" for x in v) + ")"  # noqa: E731
        problem = "an empty axis" if min(full) < 1 else \
            f"{voxels:.3g} voxels (limit {MAX_RESAMPLED_VOXELS:.3g})"
        shape_in = tuple(shape_t if full_shape_t is None else full_shape_t)
        raise InputError(f"{what}: {shape_in} voxels of spacing {fmt(spacing_t)} mm resampled "
                         f"to {fmt(target)} mm give {tuple(full)}, {problem}: the image's "
                         "spacing is far from the target (check the header's voxel size and "
                         "units)", path)
    return tuple(max(1, s) for s in new_shape(shape_t, spacing_t, target))


def _coords(n_in: int, n_out: int) -> np.ndarray:
    return (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5


def _resample_axes(vol: np.ndarray, out_shape, axes, order: int) -> np.ndarray:
    """Resample the given axes of a 3D array with a spline of ``order`` (others untouched)."""
    if order == 0:
        out = vol
        for a in axes:
            idx = np.clip(np.round(_coords(vol.shape[a], out_shape[a])), 0, vol.shape[a] - 1)
            out = np.take(out, idx.astype(np.intp), axis=a)
        return out
    # A diagonal affine map is separable: scale = n_in / n_out per axis, identity elsewhere.
    scale = np.ones(vol.ndim)
    offset = np.zeros(vol.ndim)
    shape = list(vol.shape)
    for a in axes:
        scale[a] = vol.shape[a] / out_shape[a]
        offset[a] = 0.5 * scale[a] - 0.5
        shape[a] = out_shape[a]
    return ndimage.affine_transform(vol, scale, offset=offset, output_shape=tuple(shape),
                                    order=order, mode="nearest", prefilter=order > 1)


def _plan_axes(spacing, aniso_threshold: float) -> tuple[list[int], int | None]:
    """(in-plane axes, separate axis or None) for one resampling call."""
    spacing = np.asarray(spacing, dtype=np.float64)
    if spacing.max() / spacing.min() > aniso_threshold:
        z = int(np.argmax(spacing))
        return [a for a in range(len(spacing)) if a != z], z
    return list(range(len(spacing))), None


def _clip(out: np.ndarray, vol: np.ndarray, order: int, z: int | None) -> np.ndarray:
    """Clip a spline's overshoot to the input's range, as ``skimage.transform.resize`` (which
    nnU-Net resamples with) does: over the whole volume, or slice by slice along ``z`` when
    the slices were resampled one by one."""
    if order <= 1:
        return out  # linear interpolation never leaves the input's range
    others = tuple(a for a in range(vol.ndim) if a != z)
    lo = vol.min(axis=others if z is not None else None, keepdims=True)
    hi = vol.max(axis=others if z is not None else None, keepdims=True)
    return np.clip(out, lo, hi, out=out)


def resample_volume(vol: np.ndarray, out_shape, spacing, target_spacing, order: int,
                    order_z: int, aniso_threshold: float = 3.0) -> np.ndarray:
    """Resample one 3D float array to ``out_shape``.

    The anisotropy test looks at both the original and the target spacing (whichever is
    anisotropic decides), as nnU-Net does; cubic splines are clipped to the input's range, as
    nnU-Net's resize does.
    """
    out_shape = tuple(int(s) for s in out_shape)
    if tuple(vol.shape) == out_shape:
        return vol.copy()
    aniso_src = _plan_axes(spacing, aniso_threshold)
    axes, z = aniso_src if aniso_src[1] is not None else _plan_axes(target_spacing,
                                                                    aniso_threshold)
    if z is None:
        return _clip(_resample_axes(vol, out_shape, axes, order), vol, order, None)
    inplane = [a for a in axes if vol.shape[a] != out_shape[a]]
    out = _clip(_resample_axes(vol, out_shape, inplane, order), vol, order, z) if inplane else vol
    if out.shape[z] != out_shape[z]:
        out = _resample_axes(out, out_shape, [z], order_z)
    return out


def resample_data(data: np.ndarray, out_shape, spacing, target_spacing, order: int = 3,
                  order_z: int = 0, aniso_threshold: float = 3.0) -> np.ndarray:
    """Resample a (C, z, y, x) image channel by channel (float32 out)."""
    return np.stack([
        resample_volume(ch.astype(np.float32, copy=False), out_shape, spacing, target_spacing,
                        order, order_z, aniso_threshold).astype(np.float32, copy=False)
        for ch in data
    ])


def resample_seg(seg: np.ndarray, out_shape, spacing, target_spacing, order: int = 1,
                 order_z: int = 0, aniso_threshold: float = 3.0) -> np.ndarray:
    """Resample a (z, y, x) integer label map ("linear per label" for order > 0)."""
    out_shape = tuple(int(s) for s in out_shape)
    if tuple(seg.shape) == out_shape:
        return seg.copy()
    if order == 0:
        return resample_volume(seg, out_shape, spacing, target_spacing, 0, 0, aniso_threshold)
    labels = np.unique(seg)
    out = np.zeros(out_shape, dtype=seg.dtype)
    for lab in labels:  # ascending: higher labels win ties, as nnU-Net
        if lab == 0:
            continue
        ind = resample_volume((seg == lab).astype(np.float32), out_shape, spacing,
                              target_spacing, order, order_z, aniso_threshold)
        out[ind >= 0.5] = lab
    return out
