"""Tests for sslunet.dataset.imageio: image reading and writing keep the geometry; truncated or
corrupt files and implausible spacings are refused naming the file."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from sslunet.dataset.imageio import (
    Geometry,
    check_geometry,
    read_array,
    read_header,
    write_array,
)
from sslunet.errors import InputError
from tests.helpers.damage import truncate
from tests.helpers.datasets import make_case, write_image


SHAPE = (4, 12, 12)


def test_write_read_round_trip_keeps_oblique_geometry(tmp_path, oblique):
    rng = np.random.default_rng(0)
    array = rng.normal(size=(5, 7, 9)).astype(np.float32)
    geo = Geometry((0.7, 0.8, 3.3), (10.0, -20.5, 33.25), oblique(25.0, axis=0), (9, 7, 5))
    write_array(tmp_path / "x.nii.gz", array, geo)
    back, geo2 = read_array(tmp_path / "x.nii.gz")
    np.testing.assert_array_equal(back, array)
    assert geo2.differences(geo) == []
    assert read_header(tmp_path / "x.nii.gz").differences(geo) == []
    assert geo2.array_spacing == pytest.approx((3.3, 0.8, 0.7))
    image = sitk.ReadImage(str(tmp_path / "x.nii.gz"))
    np.testing.assert_allclose(image.GetDirection(), geo.direction, atol=1e-6)
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_2d_image_is_one_slice(tmp_path):
    image = sitk.GetImageFromArray(np.arange(12, dtype=np.float32).reshape(3, 4))
    image.SetSpacing((0.5, 0.6))
    sitk.WriteImage(image, str(tmp_path / "a.nii.gz"))
    array, geo = read_array(tmp_path / "a.nii.gz")
    assert array.shape == (1, 3, 4)
    assert geo.array_spacing == pytest.approx((999.0, 0.6, 0.5))
    write_array(tmp_path / "b.nii.gz", array, geo)
    assert sitk.ReadImage(str(tmp_path / "b.nii.gz")).GetDimension() == 2


def test_geometry_differences_names_each_field():
    eye = tuple(np.eye(3).ravel())
    base = Geometry((1.0, 1.0, 3.0), (0.0, 0.0, 0.0), eye, (8, 8, 4))
    assert base.differences(base) == []
    cases = {
        "size": Geometry((1.0, 1.0, 3.0), (0.0, 0.0, 0.0), eye, (8, 8, 5)),
        "spacing": Geometry((1.0, 1.1, 3.0), (0.0, 0.0, 0.0), eye, (8, 8, 4)),
        "origin": Geometry((1.0, 1.0, 3.0), (0.0, 0.5, 0.0), eye, (8, 8, 4)),
        "direction": Geometry((1.0, 1.0, 3.0), (0.0, 0.0, 0.0),
                              (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0), (8, 8, 4)),
    }
    for field, other in cases.items():
        diff = base.differences(other)
        assert len(diff) == 1 and diff[0].startswith(field)
    # rounding noise of a header round trip is tolerated
    noisy = Geometry((1.0 + 1e-7, 1.0, 3.0), (1e-6, 0.0, 0.0), eye, (8, 8, 4))
    assert base.differences(noisy) == []


def test_corrupt_file_is_input_error(tmp_path):
    bad = tmp_path / "bad_0000.nii.gz"
    bad.write_bytes(b"\x00garbage" * 50)
    for fn in (read_array, read_header):
        with pytest.raises(InputError) as err:
            fn(bad)
        assert err.value.path == str(bad)
        assert "\n" not in str(err.value)


def _nifti_bytes(tmp_path: Path) -> bytes:
    path = write_image(tmp_path / "whole.nii.gz", make_case(SHAPE)[0][0])
    return gzip.decompress(path.read_bytes())


@pytest.mark.parametrize("variant", ["nii cut", "gzip of a cut nii", "bit flip", "mha cut"])
def test_incomplete_files_in_other_forms(tmp_path, variant):
    raw = _nifti_bytes(tmp_path)
    if variant == "nii cut":
        path = tmp_path / "x.nii"
        path.write_bytes(raw[:-10])
    elif variant == "gzip of a cut nii":  # a complete gzip stream, too little data inside
        path = tmp_path / "x.nii.gz"
        path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    elif variant == "bit flip":
        path = tmp_path / "x.nii.gz"
        data = bytearray(gzip.compress(raw))
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path = write_image(tmp_path / "x.mha", make_case(SHAPE)[0][0])
        truncate(path, 0.8)
    with pytest.raises(InputError, match="truncated|corrupt") as err:
        read_array(path)
    assert err.value.path == str(path)


def test_complete_variants_are_accepted(tmp_path):
    raw = _nifti_bytes(tmp_path)
    expected = read_array(tmp_path / "whole.nii.gz")[0]
    forms = {"plain.nii": raw,
             "two_members.nii.gz": gzip.compress(raw[:500]) + gzip.compress(raw[500:]),
             "uncompressed_named.nii.gz": raw,
             "trailing_zeros.nii.gz": gzip.compress(raw) + bytes(64)}
    for name, data in forms.items():
        (tmp_path / name).write_bytes(data)
        np.testing.assert_array_equal(read_array(tmp_path / name)[0], expected)
        read_header(tmp_path / name)


@pytest.mark.parametrize("spacing, ok", [
    ((1.0, 1.0, 999.0), True), ((1e-3, 1.0, 1e3), True), ((0.0, 1.0, 1.0), False),
    ((-1.0, 1.0, 1.0), False), ((float("nan"), 1.0, 1.0), False),
    ((float("inf"), 1.0, 1.0), False), ((1.0, 1.0, 1001.0), False)])
def test_spacing_range(spacing, ok):
    geometry = Geometry(spacing, (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()), (4, 4, 4))
    if ok:
        check_geometry(geometry, Path("x.nii.gz"))
    else:
        with pytest.raises(InputError, match="0.001 to 1000 mm"):
            check_geometry(geometry, Path("x.nii.gz"))
