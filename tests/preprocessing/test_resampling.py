"""Tests for sslunet.preprocessing.resampling: against analytic functions, the nearest-neighbour
rule along the thick-slice axis, and the guard against empty or absurd shapes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sslunet.errors import InputError
from sslunet.preprocessing.resampling import (
    checked_new_shape,
    resample_data,
    resample_seg,
    resample_volume,
)


def _blobby_labels(shape, seed, n_labels=3):
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random((n_labels + 1, *shape)), (0, 2, 2, 2))
    return field.argmax(0).astype(np.int16)  # (z, y, x) labels 0..n_labels, big blobs


@pytest.mark.parametrize("out_shape, spacing, target", [
    ((30, 36, 40), (1.0, 1.0, 1.0), (0.8, 0.89, 0.8)),
    ((20, 20, 24), (1.0, 1.0, 1.0), (1.2, 1.2, 1.0)),
    ((48, 24, 24), (4.0, 1.0, 1.0), (2.0, 1.0, 1.0)),  # separate z
])
def test_resample_seg_keeps_label_set(out_shape, spacing, target):
    seg = _blobby_labels((24, 24, 24), seed=1)
    for order in (0, 1):
        out = resample_seg(seg, out_shape, spacing, target, order=order)
        assert out.shape == out_shape and out.dtype == seg.dtype
        assert set(np.unique(out)) == set(np.unique(seg)) == {0, 1, 2, 3}


def _smooth(z, y, x):
    return np.sin(2 * np.pi * z / 23.0) * np.cos(2 * np.pi * y / 29.0) + 0.02 * x


def test_resample_data_cubic_is_accurate_on_smooth_function():
    n_in, n_out = (20, 24, 28), (29, 30, 40)
    grid = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in n_in], indexing="ij")
    vol = _smooth(*grid)[None].astype(np.float32)
    spacing = (1.0, 1.0, 1.0)
    target = tuple(s * i / o for s, i, o in zip(spacing, n_in, n_out))
    # output voxel i sits at input coordinate (i + 0.5) * n_in / n_out - 0.5
    coords = [(np.arange(o) + 0.5) * i / o - 0.5 for i, o in zip(n_in, n_out)]
    expected = _smooth(*np.meshgrid(*coords, indexing="ij"))
    inner = tuple(slice(3, -3) for _ in range(3))  # away from the clamped borders
    errors = {}
    for order in (1, 3):
        out = resample_data(vol, n_out, spacing, target, order=order)
        assert out.shape == (1, *n_out) and out.dtype == np.float32
        errors[order] = np.abs(out[0][inner] - expected[inner]).max()
    assert errors[3] < 2e-3
    assert errors[3] < errors[1] / 5


def test_separate_z_uses_nearest_along_thick_axis():
    rng = np.random.default_rng(4)
    vol = rng.normal(size=(1, 6, 10, 10)).astype(np.float32)  # rough: interpolation shows
    out = resample_data(vol, (15, 10, 10), (5.0, 1.0, 1.0), (2.0, 1.0, 1.0), order=3)
    src = np.clip(np.round((np.arange(15) + 0.5) * 6 / 15 - 0.5), 0, 5).astype(int)
    for k, j in enumerate(src):
        np.testing.assert_array_equal(out[0, k], vol[0, j])  # exact copies of slices
    # with in-plane resampling too, every slice is the in-plane resampling of a source slice
    out = resample_data(vol, (15, 14, 14), (5.0, 1.0, 1.0), (2.0, 0.7, 0.7), order=3)
    in_plane = resample_data(vol, (6, 14, 14), (5.0, 1.0, 1.0), (5.0, 0.7, 0.7), order=3)
    for k, j in enumerate(src):
        np.testing.assert_allclose(out[0, k], in_plane[0, j], atol=1e-5)
    # the same spacing change below the anisotropy threshold interpolates across slices
    smooth = resample_data(vol, (15, 10, 10), (5.0, 1.0, 1.0), (2.0, 1.0, 1.0), order=3,
                           aniso_threshold=10.0)
    assert not any(np.allclose(smooth[0, k], vol[0, j]) for k, j in enumerate(src) if k % 5)


def test_separate_z_also_when_only_target_is_anisotropic():
    vol = np.random.default_rng(0).normal(size=(1, 8, 8, 8)).astype(np.float32)
    # source isotropic, target 4:1 -> the coarse target axis is resampled with nearest
    out = resample_data(vol, (2, 8, 8), (1.0, 1.0, 1.0), (4.0, 1.0, 1.0), order=3)
    assert out.shape == (1, 2, 8, 8)
    for k in range(2):
        assert any(np.array_equal(out[0, k], vol[0, j]) for j in range(8))


def test_resampling_guard():
    # a crop box thinner than one target voxel is kept as one voxel, the image is fine
    assert checked_new_shape((1, 10, 10), (1.0, 1.0, 1.0), (5.0, 1.0, 1.0), "c", None,
                             (40, 10, 10)) == (1, 10, 10)
    with pytest.raises(InputError, match="an empty axis") as err:  # the whole image vanishes
        checked_new_shape((4, 10, 10), (1e-3, 1.0, 1.0), (1.0, 1.0, 1.0), "c", "x.nii.gz")
    assert err.value.path == "x.nii.gz"
    with pytest.raises(InputError, match="limit"):  # 3000^3 voxels: an absurd allocation
        checked_new_shape((30, 30, 30), (100.0, 100.0, 100.0), (1.0, 1.0, 1.0), "c", "x.nii.gz")


def test_cubic_resampling_is_clipped_to_the_input_range_like_skimage():
    """nnU-Net resamples with skimage's resize, which clips a spline's overshoot to the input's
    range: over the volume, or per slice when thick slices are resampled one by one."""
    step = np.zeros((4, 8, 8), np.float32)
    step[:, :, 4:] = 1.0  # a sharp edge: cubic splines overshoot it
    up = resample_volume(step, (4, 16, 16), (1.0, 1.0, 1.0), (1.0, 0.5, 0.5), 3, 0)
    assert up.min() == 0.0 and up.max() == 1.0
    raw = ndimage.zoom(step, (1, 2, 2), order=3, mode="nearest", grid_mode=True)
    assert raw.max() > 1.0 and raw.min() < 0.0  # what the clip removes
    slices = step * np.array([1.0, 2.0, 5.0, 10.0], np.float32)[:, None, None]
    aniso = resample_volume(slices, (4, 16, 16), (5.0, 1.0, 1.0), (5.0, 0.5, 0.5), 3, 0)
    for z, top in enumerate((1.0, 2.0, 5.0, 10.0)):
        assert aniso[z].max() == top and aniso[z].min() == 0.0
