"""Checks that an image file is complete, before SimpleITK reads it.

SimpleITK's NIfTI reader does not notice a truncated file: a ``.nii.gz`` cut short (an
interrupted copy or download) or a ``.nii`` missing its tail is read as an image whose missing
part is zeros. MetaImage (``.mha``/``.mhd``) files missing data are refused by ITK, but only
after it prints its own diagnostics on stderr. So before every read:

- ``.nii.gz`` (any ``.gz``): the gzip stream is decompressed to its end (in bounded chunks,
  nothing is kept): it must end with its end-of-stream marker and a matching CRC; then, as for
  ``.nii``, the decompressed size must hold what the NIfTI header describes
  (``vox_offset + prod(dim) * bitpix / 8``, NIfTI-1 and NIfTI-2, either byte order);
- ``.nii``: the file size must hold what the header describes;
- ``.mha``/``.mhd``: the data (in the file, or the ``ElementDataFile`` next to it) must hold
  ``prod(DimSize) * channels * bytes`` (uncompressed) or ``CompressedDataSize`` bytes.

Other formats (NRRD) are left to ITK, which reports missing data itself. A header this module
cannot parse is left to SimpleITK too (it either reads it or raises). Cost: one decompression
of a ``.nii.gz`` (measured on the CMR images, 0.7-1.3 MB: about 10 ms each, somewhat less than
SimpleITK's read of the same file), a ``stat`` and a header read otherwise.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

from sslunet.errors import InputError

_IN_CHUNK = 1 << 18  # compressed bytes read at a time
_OUT_CHUNK = 1 << 22  # at most this many decompressed bytes held at a time
_GZIP_MAGIC = b"\x1f\x8b"
_NIFTI_HEADER = 540  # enough for NIfTI-2 (NIfTI-1: 348)


def check_complete(path: Path) -> None:
    """Raise :class:`InputError` when ``path`` is visibly incomplete or its compression broken.

    ``path`` must be an existing regular file (see :func:`sslunet.dataset.imageio.check_file`).
    """
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        with open(path, "rb") as f:
            gzipped = f.read(2) == _GZIP_MAGIC
        if gzipped:
            head, size = _gunzip_size(path)
        else:  # ITK's NIfTI reader also reads an uncompressed file named .nii.gz
            head, size = _head(path), Path(path).stat().st_size
        if name.endswith(".nii.gz"):
            _check_nifti_size(path, head, size)
    elif name.endswith(".nii"):
        _check_nifti_size(path, _head(path), Path(path).stat().st_size)
    elif name.endswith((".mha", ".mhd")):
        _check_metaimage(path)


def _head(path: Path, n: int = _NIFTI_HEADER) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _gunzip_size(path: Path) -> tuple[bytes, int]:
    """``(first decompressed bytes, decompressed size)`` of a gzip file (all its members).

    Raises InputError when the stream ends early or is corrupt.
    """
    head, total = bytearray(), 0
    with open(path, "rb") as f:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = b""
        while True:
            data = d.unconsumed_tail or pending or f.read(_IN_CHUNK)
            pending = b""
            try:  # at the end of the file: whatever zlib still holds, then the verdict
                out = d.decompress(data, _OUT_CHUNK) if data else d.flush()
            except zlib.error as e:
                raise InputError(f"corrupt compressed data ({e})", path) from None
            total += len(out)
            if len(head) < _NIFTI_HEADER:
                head += out[: _NIFTI_HEADER - len(head)]
            if d.eof:
                # another gzip member may follow (concatenated files, bgzip); anything else
                # after the stream is ignored, as zlib's gzread (used by ITK) ignores it
                rest = d.unused_data + f.read(2)
                if rest[:2] != _GZIP_MAGIC:
                    return bytes(head), total
                d, pending = zlib.decompressobj(16 + zlib.MAX_WBITS), rest
            elif not data:
                raise InputError("truncated file: the gzip stream ends before its end marker "
                                 f"(after {total} decompressed bytes); the file is incomplete "
                                 "(interrupted copy or download?)", path)


def _nifti_layout(head: bytes) -> tuple[int, int, int] | None:
    """``(vox_offset, number of voxels, bits per voxel)`` from a NIfTI-1/-2 header, or None
    when ``head`` is not a single-file NIfTI header this check understands."""
    if len(head) < 348:
        return None
    for endian in "<>":
        sizeof_hdr = struct.unpack(endian + "i", head[:4])[0]
        if sizeof_hdr == 348 and head[344:347] == b"n+1":
            dims = struct.unpack(endian + "8h", head[40:56])
            bitpix = struct.unpack(endian + "h", head[72:74])[0]
            vox_offset = int(struct.unpack(endian + "f", head[108:112])[0])
        elif sizeof_hdr == 540 and len(head) >= 540 and head[4:7] == b"n+2":
            bitpix = struct.unpack(endian + "h", head[14:16])[0]
            dims = struct.unpack(endian + "8q", head[16:80])
            vox_offset = struct.unpack(endian + "q", head[168:176])[0]
        else:
            continue
        ndim = dims[0]
        if not 1 <= ndim <= 7 or bitpix <= 0 or bitpix % 8:
            return None
        sizes = dims[1: ndim + 1]
        if any(s <= 0 for s in sizes):
            return None
        return max(vox_offset, sizeof_hdr + 4), math.prod(sizes), bitpix
    return None


def _size_text(n: int) -> str:
    return f"{n} bytes"


def _check_nifti_size(path: Path, head: bytes, size: int) -> None:
    if len(head) >= 4:
        sizeof_hdr = {struct.unpack(e + "i", head[:4])[0] for e in "<>"} & {348, 540}
        if sizeof_hdr and size < min(sizeof_hdr):
            raise InputError(f"truncated file: {size} bytes, shorter than the NIfTI header "
                             f"({min(sizeof_hdr)} bytes) it starts with", path)
    layout = _nifti_layout(head)
    if layout is None:
        return  # not a NIfTI header we understand: SimpleITK decides
    vox_offset, voxels, bitpix = layout
    expected = vox_offset + voxels * bitpix // 8
    if size < expected:
        what = "decompressed data holds" if str(path).lower().endswith(".gz") else "file holds"
        raise InputError(f"truncated file: its header describes {voxels} voxels of {bitpix} bits "
                         f"(with the header {_size_text(expected)}) but the {what} only "
                         f"{_size_text(size)}", path)


_META_TYPES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4,
               "MET_UINT": 4, "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8,
               "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}


def _check_metaimage(path: Path) -> None:
    """Size check of a MetaImage's data (only for header fields this check understands)."""
    with open(path, "rb") as f:
        raw = f.read(1 << 16)
    fields: dict[str, str] = {}
    offset = 0
    for line in raw.splitlines(keepends=True):
        offset += len(line)
        key, sep, value = line.decode("latin-1").partition("=")
        if not sep:
            return  # not a key = value header: SimpleITK decides
        fields[key.strip().lower()] = value.strip()
        if key.strip().lower() == "elementdatafile":
            break
    else:
        return  # no ElementDataFile within the first 64 KiB: leave it to SimpleITK
    source = fields["elementdatafile"]
    if source.upper() == "LOCAL":
        data_file, available = path, Path(path).stat().st_size - offset
    elif source.upper().startswith("LIST") or "%" in source or " " in source:
        return  # slice lists and file patterns are left to SimpleITK
    else:
        data_file = Path(path).parent / source
        if not data_file.is_file():
            raise InputError(f"its data file {source} (ElementDataFile) does not exist", path)
        available = data_file.stat().st_size
        try:
            available -= max(0, int(fields.get("headersize", "0")))
        except ValueError:
            return
    compressed = fields.get("compresseddata", "false").lower() == "true"
    try:
        if compressed:
            if "compresseddatasize" not in fields:
                return
            expected = int(fields["compresseddatasize"])
        else:
            dims = [int(v) for v in fields["dimsize"].split()]
            channels = int(fields.get("elementnumberofchannels", "1"))
            expected = math.prod(dims) * channels * _META_TYPES[fields["elementtype"].upper()]
    except (KeyError, ValueError):
        return
    if available < expected:
        what = "compressed data" if compressed else "data"
        raise InputError(f"truncated file: its header describes {_size_text(expected)} of "
                         f"{what} but {data_file.name} holds only {_size_text(max(0, available))}",
                         data_file)
