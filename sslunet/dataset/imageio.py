"""Image reading and writing through SimpleITK, with geometry kept explicitly.

Arrays are numpy (z, y, x); :class:`Geometry` keeps SimpleITK's (x, y, z) spacing, origin and
direction so that outputs can be written back with exactly the input's geometry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from sslunet.errors import InputError
from sslunet.utils.atomic import atomic_path

# 2D images get this nominal slice spacing so that they can flow through the 3D pipeline as a
# single slice that is never resampled or pooled along z (nnU-Net uses the same convention).
SPACING_2D_Z = 999.0


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


def read_sitk(path: Path) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = next((ln for ln in reversed(first) if ln.strip()), "unreadable")
        raise InputError(f"cannot read image (corrupt or unsupported file: {detail.strip()[:160]})",
                         path) from None


def read_header(path: Path) -> Geometry:
    """Geometry only, without reading the voxels (fast)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise InputError("cannot read image header (corrupt or unsupported file)", path) from None
    return Geometry(tuple(reader.GetSpacing()), tuple(reader.GetOrigin()),
                    tuple(reader.GetDirection()), tuple(reader.GetSize()),
                    reader.GetNumberOfComponents())


def read_array(path: Path, dtype=np.float32) -> tuple[np.ndarray, Geometry]:
    """Read one image as a (z, y, x) array (2D images become one slice)."""
    image = read_sitk(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("multi-component (vector/RGB) images are not supported; store each "
                         "channel as its own CASE_XXXX file", path)
    if image.GetDimension() not in (2, 3):
        raise InputError(f"{image.GetDimension()}D images are not supported (2D or 3D only)", path)
    array = sitk.GetArrayFromImage(image)
    if array.ndim == 2:
        array = array[None]
    return array.astype(dtype, copy=False), geometry_of(image)


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
