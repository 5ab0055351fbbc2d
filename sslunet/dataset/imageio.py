"""Image reading and writing through SimpleITK, with geometry kept explicitly.

Arrays are numpy (z, y, x); :class:`Geometry` keeps SimpleITK's (x, y, z) spacing, origin and
direction so that outputs can be written back with exactly the input's geometry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sslunet.dataset.integrity import check_complete
from sslunet.errors import InputError
from sslunet.utils.atomic import atomic_path

# 2D images get this nominal slice spacing so that they can flow through the 3D pipeline as a
# single slice that is never resampled or pooled along z (nnU-Net uses the same convention).
SPACING_2D_Z = 999.0
# Voxel spacings accepted on input, in mm per axis (1 micrometre .. 1 metre). Outside it the
# header is wrong (units, a zeroed pixdim) and planning or resampling would divide by zero or
# allocate absurd arrays; 999 (nnU-Net's slice spacing for 2D data stored as 3D) is inside.
SPACING_RANGE_MM = (1e-3, 1e3)


@dataclass(frozen=True)
class Geometry:
    spacing: tuple[float, ...]  # SimpleITK order (x, y, z)
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    size: tuple[int, ...]  # SimpleITK order (x, y, z)
    components: int = 1  # values per voxel (label maps and our images: 1)

    @property
    def array_spacing(self) -> tuple[float, ...]:
        """Spacing in numpy (z, y, x) order, always 3 entries."""
        sp = tuple(reversed(self.spacing))
        return sp if len(sp) == 3 else (SPACING_2D_Z, *sp)

    def differences(self, other: "Geometry", rtol: float = 1e-4, atol: float = 1e-4) -> list[str]:
        """Human-readable list of what differs between two geometries (empty if none)."""
        out = []
        if self.size != other.size:
            out.append(f"size {self.size} vs {other.size}")
        for name in ("spacing", "origin", "direction"):
            a, b = np.asarray(getattr(self, name)), np.asarray(getattr(other, name))
            tol = atol * max(1.0, float(np.abs(a).max(initial=0))) if name == "origin" else atol
            if a.shape != b.shape or not np.allclose(a, b, rtol=rtol, atol=tol):
                fmt = lambda v: "(" + ", ".join(f"{x:.4g}" for x in v) + ")"  # noqa: E731
                out.append(f"{name} {fmt(a)} vs {fmt(b)}")
        return out


def geometry_of(image: sitk.Image) -> Geometry:
    return Geometry(tuple(image.GetSpacing()), tuple(image.GetOrigin()),
                    tuple(image.GetDirection()), tuple(image.GetSize()))


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def check_file(path: Path, complete: bool = True) -> None:
    """Refuse what is not a readable, complete image file, before SimpleITK sees it.

    A folder named like an image, a missing or empty file; with ``complete`` also a truncated
    or corrupt compressed file (see :mod:`sslunet.dataset.integrity`).
    """
    p = Path(path)
    if p.is_dir():
        raise InputError("is a folder, not an image file", path)
    if not p.exists():
        raise InputError("file does not exist" + (" (broken link)" if p.is_symlink() else ""),
                         path)
    if not p.is_file():
        raise InputError("is not a regular file", path)
    try:
        if p.stat().st_size == 0:
            raise InputError("empty file (0 bytes)", path)
        if complete:
            check_complete(p)
    except OSError as e:
        raise InputError(f"cannot be read ({e.strerror or e})", path) from None


def check_geometry(geometry: Geometry, path: Path) -> None:
    """Refuse implausible geometry: spacing outside :data:`SPACING_RANGE_MM` (or NaN, inf, 0,
    negative), a non-finite origin, a non-finite or singular direction."""
    lo, hi = SPACING_RANGE_MM
    if not all(math.isfinite(s) and lo <= s <= hi for s in geometry.spacing):
        raise InputError(f"implausible voxel spacing {_fmt(geometry.spacing)} mm: sslunet "
                         f"accepts {lo:g} to {hi:g} mm per axis (check the header's voxel size "
                         "and units)", path)
    if not all(math.isfinite(v) for v in geometry.origin):
        raise InputError(f"origin {_fmt(geometry.origin)} is not finite", path)
    n = len(geometry.spacing)
    direction = np.asarray(geometry.direction, dtype=np.float64)
    if (direction.size != n * n or not np.isfinite(direction).all()
            or abs(np.linalg.det(direction.reshape(n, n))) < 1e-6):
        raise InputError(f"direction {_fmt(geometry.direction)} is not a valid rotation "
                         "(non-finite or singular)", path)


def read_sitk(path: Path) -> sitk.Image:
    """Read one image after :func:`check_file`; its geometry passes :func:`check_geometry`."""
    check_file(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = next((ln for ln in reversed(first) if ln.strip()), "unreadable")
        raise InputError(f"cannot read image (corrupt or unsupported file: {detail.strip()[:160]})",
                         path) from None
    check_geometry(geometry_of(image), path)
    return image


def read_header(path: Path, complete: bool = True) -> Geometry:
    """Geometry only, without keeping the voxels.

    With ``complete`` (the default) the file is also checked to be complete
    (:func:`check_file`), which for a ``.nii.gz`` means decompressing it once; ``complete=False``
    reads the header alone.
    """
    check_file(path, complete)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError("cannot read image header (corrupt or unsupported file)", path) from None
    geometry = Geometry(tuple(reader.GetSpacing()), tuple(reader.GetOrigin()),
                        tuple(reader.GetDirection()), tuple(reader.GetSize()),
                        reader.GetNumberOfComponents())
    check_geometry(geometry, path)
    return geometry


def read_array(path: Path, dtype=np.float32) -> tuple[np.ndarray, Geometry]:
    """Read one image as a (z, y, x) array (2D images become one slice).

    ``dtype=None`` keeps the file's own voxel type. Every problem with the file (missing, a
    folder, truncated, unreadable, implausible geometry, more than one component, not 2D/3D)
    is an :class:`InputError` naming it.
    """
    image = read_sitk(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("multi-component (vector/RGB) images are not supported; store each "
                         "channel as its own CASE_XXXX file", path)
    if image.GetDimension() not in (2, 3):
        raise InputError(f"{image.GetDimension()}D images are not supported (2D or 3D only)", path)
    array = sitk.GetArrayFromImage(image)
    if array.ndim == 2:
        array = array[None]
    return (array if dtype is None else array.astype(dtype, copy=False)), geometry_of(image)


def write_array(path: Path, array: np.ndarray, geometry: Geometry) -> None:
    """Write a (z, y, x) array with ``geometry``, atomically."""
    if len(geometry.size) == 2:
        array = array[0]
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    ending = "".join(Path(path).suffixes[-2:]) if str(path).endswith(".gz") else Path(path).suffix
    with atomic_path(path, suffix=ending) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)
