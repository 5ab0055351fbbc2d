"""Per-case preprocessing and its inverse.

Order (as nnU-Net v2, anchors note §2c): crop to the nonzero box -> transpose (coarsest axis
first) -> normalise -> resample to the configuration's spacing. The 2d configuration keeps each
case's own spacing along the first (slice) axis and resamples in-plane only.

:func:`revert_to_original` undoes it for predictions: resample back to the cropped shape,
transpose back, paste into the original extent. Together with :class:`CaseProperties` (which
keeps SimpleITK's spacing, origin and direction) that gives masks in the input's exact geometry.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from sslunet.dataset.imageio import Geometry
from sslunet.plans import ConfigurationPlan, Plans
from sslunet.preprocessing.cropping import nonzero_bbox
from sslunet.preprocessing.normalization import normalize
from sslunet.preprocessing.resampling import checked_new_shape, resample_data, resample_seg
from sslunet.preprocessing.storage import ANNOTATED_KEY, CaseProperties

MAX_LOCATIONS_PER_CLASS = 2_000  # nnU-Net keeps 10k; 2k random centres suffice and keep
# the properties file small
MIN_COVERAGE = 0.01  # sample at least 1% of a class's voxels (for small structures)
LOCATION_SEED = 1234


def target_spacing_for(config: ConfigurationPlan, spacing_t) -> tuple[float, ...]:
    """Target spacing of a case (transposed order) under ``config``."""
    if config.ndim == 2:
        return (float(spacing_t[0]), *config.spacing)
    return tuple(config.spacing)


def class_locations(seg: np.ndarray, case_index: int,
                    ignore: int | None = None) -> dict[str, list[list[int]]]:
    """Random voxel coordinates of each foreground label, for foreground oversampling; with an
    ignore label, also of the annotated voxels (any class but ignore) under ``ANNOTATED_KEY``,
    from which the other samples are drawn (nnU-Net v2 does the same for sparse labels)."""
    rng = np.random.default_rng([LOCATION_SEED, case_index])
    out = {}
    for lab in np.unique(seg):
        if lab > 0 and lab != ignore:
            out[str(int(lab))] = _sample_coords(np.argwhere(seg == lab), rng)  # (n, 3)
    if ignore is not None and (seg == ignore).any():
        out[ANNOTATED_KEY] = _sample_coords(np.argwhere((seg != ignore) & (seg >= 0)), rng)
    return out


def _sample_coords(coords: np.ndarray, rng: np.random.Generator) -> list[list[int]]:
    n = min(len(coords), max(MAX_LOCATIONS_PER_CLASS, int(np.ceil(len(coords) * MIN_COVERAGE))))
    pick = rng.choice(len(coords), size=n, replace=False)
    return coords[np.sort(pick)].tolist()


def _nonzero_mask(data: np.ndarray, fill: bool) -> np.ndarray:
    mask = np.any(data != 0, axis=0)
    return ndimage.binary_fill_holes(mask) if fill else mask


def preprocess_case(
    data: np.ndarray, seg: np.ndarray | None, geometry: Geometry, plans: Plans,
    config: ConfigurationPlan, case_id: str, source: str, case_index: int = 0,
    source_file=None,
) -> tuple[np.ndarray, np.ndarray | None, CaseProperties]:
    """Preprocess one case given as ``data (C, z, y, x)`` and ``seg (z, y, x)`` or None.

    Returns ``(data (C, *shape_t) float32, seg (1, *shape_t) int8 or None, properties)``.

    Raises:
        InputError: (naming ``source_file``) when resampling the image to the configuration's
            spacing would leave an axis empty or exceed
            :data:`~sslunet.preprocessing.resampling.MAX_RESAMPLED_VOXELS` voxels.
    """
    original_shape = tuple(int(s) for s in data.shape[1:])
    box = nonzero_bbox(data)
    crop = tuple(slice(a, b) for a, b in box)
    data = data[(slice(None), *crop)]
    use_mask = any(config.use_mask_for_norm)
    mask = _nonzero_mask(data, fill=use_mask)
    if seg is not None:
        seg = seg[crop].astype(np.int16, copy=True)
        seg[(seg == 0) & ~mask] = -1  # outside the body: known background, marked as in nnU-Net
    fwd = plans.transpose_forward
    data = data.transpose(0, *[a + 1 for a in fwd])  # (C, z, y, x) -> (C, *transposed)
    mask = mask.transpose(fwd)
    seg = None if seg is None else seg.transpose(fwd)
    spacing_t = tuple(geometry.array_spacing[a] for a in fwd)
    data = normalize(np.array(data, dtype=np.float32), mask, config.normalization_schemes,
                     config.use_mask_for_norm, plans.intensity_stats)
    target = target_spacing_for(config, spacing_t)
    shape_crop = tuple(int(s) for s in data.shape[1:])
    shape_new = checked_new_shape(shape_crop, spacing_t, target,
                                  f"case '{case_id}' ({config.name})", source_file,
                                  tuple(original_shape[a] for a in fwd))
    r = config.resampling
    data = resample_data(data, shape_new, spacing_t, target, r.order_data, r.order_z_data,
                         r.anisotropy_threshold)
    locations: dict[str, list[list[int]]] = {}
    if seg is not None:
        seg = resample_seg(seg, shape_new, spacing_t, target, r.order_seg, r.order_z_seg,
                           r.anisotropy_threshold)
        locations = class_locations(seg, case_index, plans.ignore_label)
        seg = seg[None].astype(np.int8)
    props = CaseProperties(
        case_id=case_id, source=source, sitk_spacing=geometry.spacing,
        sitk_origin=geometry.origin, sitk_direction=geometry.direction,
        original_shape=original_shape, bbox=box, shape_after_crop=shape_crop,
        spacing=spacing_t, target_spacing=target, shape_after_resample=shape_new,
        has_seg=seg is not None, class_locations=locations,
    )
    return data, seg, props


def revert_logits(logits: np.ndarray, props: CaseProperties, plans: Plans,
                  config: ConfigurationPlan) -> np.ndarray:
    """(K, *shape_after_resample) logits -> (K, *original_shape) probabilities in original order.

    As nnU-Net v2: logits are resampled linearly (nearest along the thick-slice axis) to the
    crop box, then a softmax; voxels outside the crop box get background (probability 1 for
    class 0).
    """
    r = config.resampling
    back = resample_data(logits, props.shape_after_crop, props.target_spacing, props.spacing,
                         order=1, order_z=r.order_z_data, aniso_threshold=r.anisotropy_threshold)
    back = np.exp(back - back.max(0, keepdims=True))  # softmax over classes, (K, *crop)
    back /= back.sum(0, keepdims=True)
    back = back.transpose(0, *[a + 1 for a in plans.transpose_backward])
    out = np.zeros((logits.shape[0], *props.original_shape), dtype=np.float32)
    out[0] = 1.0
    crop = tuple(slice(a, b) for a, b in props.bbox)
    out[(slice(None), *crop)] = back
    return out


def revert_segmentation(seg: np.ndarray, props: CaseProperties, plans: Plans,
                        config: ConfigurationPlan) -> np.ndarray:
    """(*shape_after_resample) label map -> (*original_shape) label map, original order."""
    r = config.resampling
    back = resample_seg(seg, props.shape_after_crop, props.target_spacing, props.spacing,
                        r.order_seg, r.order_z_seg, r.anisotropy_threshold)
    back = back.transpose(plans.transpose_backward)
    out = np.zeros(props.original_shape, dtype=np.uint8)
    crop = tuple(slice(a, b) for a, b in props.bbox)
    out[crop] = np.maximum(back, 0)
    return out
