"""Per-case integrity checks, run while a case is read for the fingerprint.

Each failed check raises :class:`InputError` naming the offending file and the problem, so
``sslunet_plan`` (and ``--verify-only``) stop with one line before anything is written.
"""

from __future__ import annotations

import numpy as np

from sslunet.dataset.imageio import Geometry, read_array
from sslunet.dataset.raw import RawCase, RawDataset
from sslunet.errors import InputError
from sslunet.utils.parallel import parallel_map


def load_checked_case(
    case: RawCase, labels: dict[str, int] | None
) -> tuple[np.ndarray, np.ndarray | None, Geometry]:
    """Read and verify one case.

    Returns:
        ``(data (C, z, y, x) float32, seg (z, y, x) int16 or None, geometry of channel 0)``.

    Raises:
        InputError: unreadable file, channels or label of different geometry, non-finite
            voxels, label values not declared in ``dataset.json``.
    """
    arrays, geometry = [], None
    for path in case.images:
        array, geo = read_array(path)
        if geometry is None:
            geometry = geo
        else:
            diff = geometry.differences(geo)
            if diff:
                raise InputError(f"channel geometry differs from {case.images[0].name}: "
                                 + "; ".join(diff), path)
        if not np.isfinite(array).all():
            raise InputError("contains non-finite voxel values (NaN or inf)", path)
        arrays.append(array)
    data = np.stack(arrays)  # (C, z, y, x)
    seg = None
    if case.label is not None:
        seg_raw, geo = read_array(case.label, dtype=None)  # the file's own type: exact values
        diff = geometry.differences(geo)
        if diff:
            raise InputError(f"label and image {case.images[0].name} differ in "
                             + "; ".join(diff), case.label)
        seg = _label_values_checked(seg_raw, labels, case.label)
    return data, seg, geometry


def _label_values_checked(seg: np.ndarray, labels: dict[str, int] | None, path) -> np.ndarray:
    """The label map as int16 once its values are known to be integers (listed in ``labels``
    when given); otherwise an InputError naming the offending values."""
    if np.issubdtype(seg.dtype, np.floating):
        if not np.isfinite(seg).all():
            raise InputError("label contains non-finite values", path)
        fractional = seg != np.round(seg)
        if fractional.any():
            raise InputError(f"label contains non-integer values (e.g. "
                             f"{float(seg[fractional][0]):g})", path)
    elif not np.issubdtype(seg.dtype, np.integer):
        raise InputError(f"label voxels must be integers, not {seg.dtype}", path)
    found = [int(v) for v in np.unique(seg)]
    if labels is not None:
        unknown = sorted(set(found) - set(labels.values()))
        if unknown:
            shown = ", ".join(str(v) for v in unknown[:8]) + (", ..." if len(unknown) > 8 else "")
            raise InputError(f"label values [{shown}] are not listed in dataset.json labels "
                             f"{sorted(labels.values())}", path)
    elif found and (found[0] < -(2 ** 15) or found[-1] >= 2 ** 15):
        raise InputError(f"label values {found[0]}..{found[-1]} are outside the int16 range",
                         path)
    return seg.astype(np.int16)


def _check(args: tuple[RawCase, dict[str, int]]) -> None:
    load_checked_case(*args)


def verify_dataset(dataset: RawDataset, num_processes: int = 2, progress: bool = True,
                   include_test: bool = True) -> int:
    """Run every check on every case; return the number of cases checked."""
    sources = ("imagesTr", "imagesUnlabeled") + (("imagesTs",) if include_test else ())
    cases = dataset.cases_from(*sources)
    parallel_map(_check, [(c, dataset.labels) for c in cases], num_processes,
                 desc="verify", progress=progress)
    return len(cases)
