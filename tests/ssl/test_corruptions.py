"""Tests for sslunet.ssl.corruptions: invariants, determinism and known answers."""

from __future__ import annotations


import numpy as np
import pytest

from sslunet.ssl.corruptions import (
    Box,
    ShuffleParams,
    apply_context_restoration,
    apply_local_shuffle,
    apply_nonlinear,
    apply_paint,
    context_restoration,
    draw_context_restoration,
    draw_genesis,
    draw_local_shuffle,
    draw_nonlinear,
    draw_paint,
    genesis_corrupt,
)


def _image(shape=(2, 24, 20), seed=0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _union(shape, boxes) -> np.ndarray:
    inside = np.zeros(shape, dtype=bool)
    for box in boxes:
        inside[box.index()] = True
    return inside


# ---------------------------------------------------------------------------------------------
# context restoration


@pytest.mark.parametrize("shape, patch", [((2, 24, 20), 5), ((1, 6, 30, 30), (2, 5, 5))])
def test_context_restoration_swaps_disjoint_patches(shape, patch):
    image = _image(shape)
    params = draw_context_restoration(
        shape[1:], np.random.default_rng(1), num_swaps=4, patch_size=patch
    )
    out = apply_context_restoration(image, params)
    assert out.shape == image.shape and out.dtype == image.dtype
    np.testing.assert_array_equal(np.sort(out, axis=None), np.sort(image, axis=None))  # histogram
    boxes = [b for pair in params.pairs for b in pair]
    assert len(boxes) == 8
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    inside = _union(shape, boxes)
    np.testing.assert_array_equal(out[~inside], image[~inside])
    for a, b in params.pairs:
        np.testing.assert_array_equal(out[a.index()], image[b.index()])
        np.testing.assert_array_equal(out[b.index()], image[a.index()])
    assert np.any(out != image)


def test_context_restoration_deterministic_and_validates():
    image = _image((1, 48, 40))
    a = context_restoration(image, np.random.default_rng(3))
    b = context_restoration(image, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="disjoint"):
        context_restoration(image, np.random.default_rng(0), num_swaps=40, patch_size=5)
    with pytest.raises(ValueError):
        context_restoration(image, np.random.default_rng(0), patch_size=(5, 5, 5))
    with pytest.raises(ValueError):
        context_restoration(image, np.random.default_rng(0), num_swaps=0)


def test_box_overlap():
    assert Box((0, 0), (3, 3)).overlaps(Box((2, 2), (3, 3)))
    assert not Box((0, 0), (3, 3)).overlaps(Box((3, 0), (3, 3)))


# ---------------------------------------------------------------------------------------------
# Models Genesis transforms


_GENESIS = {
    "nonlinear": lambda x, rng: apply_nonlinear(x, draw_nonlinear(rng)),
    "shuffle": lambda x, rng: apply_local_shuffle(
        x, draw_local_shuffle(x.shape[1:], rng, num_blocks=200, max_block=4)),
    "inpaint": lambda x, rng: apply_paint(x, draw_paint(x.shape[1:], rng, outpaint=False)),
    "outpaint": lambda x, rng: apply_paint(x, draw_paint(x.shape[1:], rng, outpaint=True)),
    "genesis": lambda x, rng: genesis_corrupt(
        x, rng, p_nonlinear=1.0, p_local_shuffle=1.0, p_paint=1.0
    ),
}


@pytest.mark.parametrize("name", sorted(_GENESIS))
@pytest.mark.parametrize("shape", [(1, 32, 28), (2, 12, 16, 14)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_genesis_transform_shape_determinism_change(name, shape, dtype):
    image = _image(shape, seed=4, dtype=dtype)
    before = image.copy()
    a = _GENESIS[name](image, np.random.default_rng(8))
    b = _GENESIS[name](image, np.random.default_rng(8))
    c = _GENESIS[name](image, np.random.default_rng(9))
    assert a.shape == image.shape and a.dtype == image.dtype
    np.testing.assert_array_equal(a, b)
    assert np.any(a != image)
    assert np.any(a != c)
    np.testing.assert_array_equal(image, before)  # input untouched


@pytest.mark.parametrize("seed", range(6))
def test_nonlinear_is_monotonic_per_channel(seed):
    ramp = np.linspace(-3.0, 5.0, 400)
    image = np.stack([ramp, 2 * ramp + 1]).reshape(2, 20, 20)  # (C, y, x)
    params = draw_nonlinear(np.random.default_rng(seed))
    out = apply_nonlinear(image, params)
    for ch in range(2):
        diffs = np.diff(out[ch].ravel())
        assert np.all(diffs <= 1e-12) if params.invert else np.all(diffs >= -1e-12)
        # The range [min, max] maps onto itself (end points fixed or swapped).
        assert out[ch].min() == pytest.approx(image[ch].min()) and out[ch].max() == pytest.approx(
            image[ch].max()
        )
    assert {draw_nonlinear(np.random.default_rng(s)).invert for s in range(20)} == {False, True}


def test_nonlinear_keeps_constant_channel():
    image = np.stack([np.full((4, 4), 2.5), np.arange(16.0).reshape(4, 4)])  # (2, 4, 4)
    out = apply_nonlinear(image, draw_nonlinear(np.random.default_rng(0)))
    np.testing.assert_array_equal(out[0], image[0])


def test_local_shuffle_single_block_permutes_only_that_block():
    image = _image((2, 16, 16), seed=5)
    params = draw_local_shuffle((16, 16), np.random.default_rng(2), num_blocks=1, max_block=6)
    params = ShuffleParams.from_boxes((Box((3, 4), (5, 6)),), params.seed)
    out = apply_local_shuffle(image, params)
    inside = _union(image.shape, params.boxes)
    np.testing.assert_array_equal(out[~inside], image[~inside])
    np.testing.assert_array_equal(np.sort(out[0], axis=None), np.sort(image[0], axis=None))
    # Voxels move together across channels.
    pairs_in = {tuple(v) for v in image[:, 3:8, 4:10].reshape(2, -1).T}  # (V, C) rows
    pairs_out = {tuple(v) for v in out[:, 3:8, 4:10].reshape(2, -1).T}  # (V, C) rows
    assert pairs_in == pairs_out and np.any(out != image)


def _last_block(shape, boxes):
    """Naive reference: for every voxel the index of the last box covering it, else -1."""
    last = np.full(shape, -1)
    for i, box in enumerate(boxes):
        last[box.index()[1:]] = i
    return last


@pytest.mark.parametrize("shape", [(20, 17), (9, 8, 7)])
def test_local_shuffle_overlapping_blocks_later_block_wins(shape):
    image = np.arange(np.prod(shape), dtype=np.float64).reshape(1, *shape)  # value = index
    params = draw_local_shuffle(shape, np.random.default_rng(3), num_blocks=60, max_block=5)
    boxes = params.boxes
    out = apply_local_shuffle(image, params)
    source = out[0].astype(int)  # where each output voxel was read from
    last = _last_block(shape, boxes)
    np.testing.assert_array_equal(source[last < 0], np.flatnonzero(last.ravel() < 0))
    for i, box in enumerate(boxes):
        mine = last == i
        inside = np.zeros(shape, bool)
        inside[box.index()[1:]] = True
        read = source[mine]
        assert np.all(inside.ravel()[read])  # read from inside its own block of the original
        assert len(set(read.tolist())) == read.size  # a permutation: no voxel read twice
    assert np.any(source != np.arange(source.size).reshape(shape))


def test_local_shuffle_permutations_are_uniform():
    image = np.arange(3.0).reshape(1, 1, 3)
    counts = {}
    for seed in range(600):
        params = ShuffleParams.from_boxes((Box((0, 0), (1, 3)),), seed)
        key = tuple(apply_local_shuffle(image, params).ravel())
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 6 and all(60 <= n <= 140 for n in counts.values())


def test_inpaint_and_outpaint_touch_the_right_voxels():
    image = _image((2, 30, 24), seed=6)
    lo = image.min(axis=(1, 2), keepdims=True)
    hi = image.max(axis=(1, 2), keepdims=True)
    params = draw_paint((30, 24), np.random.default_rng(1), outpaint=False)
    out = apply_paint(image, params)
    inside = _union(image.shape, params.boxes)
    np.testing.assert_array_equal(out[~inside], image[~inside])
    assert np.all((out >= lo) & (out <= hi))
    for box in params.boxes:
        assert all(30 // 6 <= n <= 30 // 3 for n in box.size[:1]) and all(
            24 // 6 <= n <= 24 // 3 for n in box.size[1:]
        )
    params = draw_paint((30, 24), np.random.default_rng(1), outpaint=True)
    out = apply_paint(image, params)
    inside = _union(image.shape, params.boxes)
    np.testing.assert_array_equal(out[inside], image[inside])
    assert np.all(out[~inside] != image[~inside])
    assert 1 <= len(params.boxes) <= 5


def test_genesis_composition_probabilities():
    rng = np.random.default_rng(0)
    none = draw_genesis((16, 16), rng, p_nonlinear=0.0, p_local_shuffle=0.0, p_paint=0.0)
    assert none.shuffle is none.nonlinear is none.paint is None
    image = _image((1, 16, 16))
    untouched = genesis_corrupt(image, rng, p_nonlinear=0.0, p_local_shuffle=0.0, p_paint=0.0)
    np.testing.assert_array_equal(untouched, image)
    out = draw_genesis((16, 16), rng, p_paint=1.0, p_outpaint_given_paint=1.0)
    assert out.paint is not None and out.paint.outpaint
    inn = draw_genesis((16, 16), rng, p_paint=1.0, p_outpaint_given_paint=0.0)
    assert inn.paint is not None and not inn.paint.outpaint
    # Default rates (0.9, 0.5, 0.9, 0.8) show up as frequencies.
    draws = [draw_genesis((16, 16), np.random.default_rng(s)) for s in range(400)]
    assert np.mean([d.nonlinear is not None for d in draws]) == pytest.approx(0.9, abs=0.06)
    assert np.mean([d.shuffle is not None for d in draws]) == pytest.approx(0.5, abs=0.08)
    painted = [d.paint for d in draws if d.paint is not None]
    assert len(painted) / 400 == pytest.approx(0.9, abs=0.06)
    assert np.mean([p.outpaint for p in painted]) == pytest.approx(0.8, abs=0.07)
    with pytest.raises(ValueError):
        draw_genesis((16, 16), rng, p_paint=1.5)


# ---------------------------------------------------------------------------------------------
# block masking
