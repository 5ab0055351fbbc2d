"""Overlap, surface-distance and volume metrics for one reference/prediction pair.

All arrays are in numpy axis order and ``spacing`` is the voxel size in millimetres in the same
order (for an image read with SimpleITK that is ``image.GetSpacing()[::-1]``). Works for 2d and
3d masks alike.

Empty-mask rules (used everywhere in :mod:`sslunet.evaluation`):

* reference and prediction both empty: Dice 1.0, HD95 0.0 (a correct "nothing here");
* exactly one of them empty: Dice 0.0, HD95 NaN (no surface to measure a distance to, so the
  distance is undefined; summaries leave such cases out of the HD95 mean and count them).

Surface and HD95 definitions (choices, since papers and tools differ):

* the surface of a mask is its set of voxels with at least one face neighbour (6-connectivity in
  3d, 4 in 2d) outside the mask; voxels beyond the image border count as outside, so a mask that
  touches the border has surface voxels there;
* a surface-to-surface distance is the Euclidean distance in millimetres between voxel centres;
* HD95 pools the two directed distance sets (every reference surface voxel to the nearest
  prediction surface voxel, and every prediction surface voxel to the nearest reference surface
  voxel) and takes their 95th percentile with numpy's default linear interpolation. This is the
  convention of MedPy's ``hd95``; taking the larger of the two directed percentiles instead can
  give a larger value when the two surfaces differ in size.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

#: How the summaries describe the rules above (copied into ``summary.json`` as ``notes``).
EMPTY_MASK_NOTES: dict[str, str] = {
    "both_empty": "reference and prediction both empty for a class: Dice 1.0, HD95 0.0 mm",
    "one_empty": (
        "exactly one of reference and prediction empty: Dice 0.0, HD95 undefined (null here); "
        "such cases are left out of the HD95 mean and std and counted as hd95_undefined"),
    "hd95": (
        "HD95: 95th percentile (linear interpolation) of the pooled surface-to-surface distances "
        "in mm in both directions; surface = mask voxels with a face neighbour outside the mask, "
        "the image border counting as outside"),
    "volume_difference": (
        "volume_diff_ml = prediction - reference in ml; volume_diff_rel = that divided by the "
        "reference volume (0 when both are empty, undefined when only the reference is empty)"),
    "std": "std is the population standard deviation (ddof=0) over the cases that count",
}


def _check_pair(ref_mask: np.ndarray, pred_mask: np.ndarray,
                spacing: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    ref_mask = np.asarray(ref_mask, dtype=bool)
    pred_mask = np.asarray(pred_mask, dtype=bool)
    if ref_mask.shape != pred_mask.shape:
        raise ValueError(f"mask shapes differ: {ref_mask.shape} vs {pred_mask.shape}")
    if spacing is not None and len(spacing) != ref_mask.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match {ref_mask.ndim}d masks")
    return ref_mask, pred_mask


def dice(ref_mask: np.ndarray, pred_mask: np.ndarray) -> float:
    """Dice similarity coefficient ``2|R∩P| / (|R| + |P|)``.

    Args:
        ref_mask: Reference mask, any shape, interpreted as boolean.
        pred_mask: Predicted mask, same shape.

    Returns:
        Dice in [0, 1]; 1.0 when both masks are empty, 0.0 when exactly one is.
    """
    ref_mask, pred_mask = _check_pair(ref_mask, pred_mask)
    total = int(ref_mask.sum()) + int(pred_mask.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(ref_mask, pred_mask).sum()) / total


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Smallest box holding every True voxel of a non-empty ``mask``, grown by ``margin``."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append(slice(max(int(hits[0]) - margin, 0),
                         min(int(hits[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)


def surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels of ``mask``: those with a face neighbour outside it (the border is outside).

    Args:
        mask: Boolean mask, any dimensionality.

    Returns:
        Boolean array of the same shape.
    """
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    eroded = ndimage.binary_erosion(mask, structure=structure, border_value=0)
    return mask & ~eroded


def directed_surface_distances(ref_mask: np.ndarray, pred_mask: np.ndarray,
                               spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm from each surface voxel of one mask to the other mask's surface.

    Both masks must be non-empty. The work is done inside the union bounding box of the two
    masks grown by one voxel, which gives the same answer as the full image: every surface voxel
    lies in the box, and everything outside it is background, as the erosion assumes beyond an
    array's edge. The margin keeps a background ring in the crop all the same, so the surfaces
    do not rest on that edge rule.

    Args:
        ref_mask: Non-empty boolean mask, shape ``S``.
        pred_mask: Non-empty boolean mask, shape ``S``.
        spacing: Voxel size in mm per axis of ``S``.

    Returns:
        ``(ref_to_pred, pred_to_ref)``: 1d float arrays, one entry per surface voxel of the
        reference and of the prediction respectively.
    """
    ref_mask, pred_mask = _check_pair(ref_mask, pred_mask, spacing)
    if not ref_mask.any() or not pred_mask.any():
        raise ValueError("surface distances need two non-empty masks")
    box = _bounding_box(ref_mask | pred_mask, margin=1)
    ref_surface = surface(ref_mask[box])
    pred_surface = surface(pred_mask[box])
    sampling = [float(s) for s in spacing]
    # The EDT of the complement gives, at every voxel, the distance to the nearest surface voxel.
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=sampling)
    to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=sampling)
    return to_pred[ref_surface], to_ref[pred_surface]


def hd95(ref_mask: np.ndarray, pred_mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Symmetric 95th-percentile Hausdorff distance between the mask surfaces, in mm.

    The two directed surface-distance sets are pooled before taking the 95th percentile (see
    the module docstring for the surface definition and why pooling).

    Args:
        ref_mask: Reference mask, shape ``S``, interpreted as boolean.
        pred_mask: Predicted mask, shape ``S``.
        spacing: Voxel size in mm per axis of ``S`` (numpy axis order).

    Returns:
        HD95 in mm; 0.0 when both masks are empty, NaN when exactly one is.
    """
    ref_mask, pred_mask = _check_pair(ref_mask, pred_mask, spacing)
    ref_any, pred_any = bool(ref_mask.any()), bool(pred_mask.any())
    if not ref_any and not pred_any:
        return 0.0
    if ref_any != pred_any:
        return math.nan
    ref_to_pred, pred_to_ref = directed_surface_distances(ref_mask, pred_mask, spacing)
    return float(np.percentile(np.concatenate([ref_to_pred, pred_to_ref]), 95))


def volume_ml(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Volume of ``mask`` in millilitres (1 ml = 1000 mm³)."""
    return float(np.count_nonzero(mask)) * float(np.prod(spacing)) / 1000.0


def volume_difference_ml(ref_mask: np.ndarray, pred_mask: np.ndarray,
                         spacing: Sequence[float]) -> tuple[float, float]:
    """Signed volume error of the prediction.

    Args:
        ref_mask: Reference mask, shape ``S``.
        pred_mask: Predicted mask, shape ``S``.
        spacing: Voxel size in mm per axis of ``S``.

    Returns:
        ``(difference_ml, relative)``: prediction minus reference volume in ml, and that divided
        by the reference volume. ``relative`` is 0.0 when both are empty and NaN when only the
        reference is empty (division by zero).
    """
    ref_mask, pred_mask = _check_pair(ref_mask, pred_mask, spacing)
    ref_ml, pred_ml = volume_ml(ref_mask, spacing), volume_ml(pred_mask, spacing)
    difference = pred_ml - ref_ml
    if ref_ml == 0.0:
        return difference, (0.0 if pred_ml == 0.0 else math.nan)
    return difference, difference / ref_ml


def class_metrics(ref_mask: np.ndarray, pred_mask: np.ndarray,
                  spacing: Sequence[float]) -> dict[str, float | bool]:
    """Every metric for one class of one case.

    Args:
        ref_mask: Reference mask, shape ``S``.
        pred_mask: Predicted mask, shape ``S``.
        spacing: Voxel size in mm per axis of ``S``.

    Returns:
        ``dice``, ``hd95`` (mm), ``volume_ref_ml``, ``volume_pred_ml``, ``volume_diff_ml``,
        ``volume_diff_rel``, ``ref_empty``, ``pred_empty``.
    """
    ref_mask, pred_mask = _check_pair(ref_mask, pred_mask, spacing)
    diff_ml, diff_rel = volume_difference_ml(ref_mask, pred_mask, spacing)
    return {
        "dice": dice(ref_mask, pred_mask),
        "hd95": hd95(ref_mask, pred_mask, spacing),
        "volume_ref_ml": volume_ml(ref_mask, spacing),
        "volume_pred_ml": volume_ml(pred_mask, spacing),
        "volume_diff_ml": diff_ml,
        "volume_diff_rel": diff_rel,
        "ref_empty": not ref_mask.any(),
        "pred_empty": not pred_mask.any(),
    }


def case_metrics(ref_labels: np.ndarray, pred_labels: np.ndarray, spacing: Sequence[float],
                 labels: Mapping[str, int],
                 ignore: int | None = None) -> dict[str, dict[str, float | bool]]:
    """Metrics per foreground class of one case.

    Args:
        ref_labels: Reference label map, integer array of shape ``S``.
        pred_labels: Predicted label map, shape ``S``.
        spacing: Voxel size in mm per axis of ``S`` (numpy axis order).
        labels: Class name to label value; value 0 (background) is skipped.
        ignore: The ignore label: voxels whose reference carries it are left out of every
            class's masks (nnU-Net v2 scores sparse references the same way).

    Returns:
        Class name to the dict of :func:`class_metrics`, in the order of ``labels``.
    """
    ref_labels = np.asarray(ref_labels)
    pred_labels = np.asarray(pred_labels)
    if ref_labels.shape != pred_labels.shape:
        raise ValueError(f"label map shapes differ: {ref_labels.shape} vs {pred_labels.shape}")
    keep = True if ignore is None else ref_labels != ignore
    return {name: class_metrics((ref_labels == value) & keep, (pred_labels == value) & keep,
                                spacing)
            for name, value in labels.items() if int(value) not in (0, ignore)}
