"""Tests for sslunet.inference.sliding_window against naive references and known answers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from sslunet.errors import InputError
from sslunet.inference import (
    InferenceConfig,
    compute_tile_starts,
    gaussian_importance_map,
    predict_slices_2d,
    sliding_window_predict,
)

# ---------------------------------------------------------------------------------------------
# helpers


def _conv_net(ndim: int, in_ch: int, out_ch: int, seed: int, symmetric: bool = False) -> nn.Module:
    """Two 3x3(x3) zero-padded convolutions with seeded weights.

    With ``symmetric`` every kernel is averaged over all its spatial flips, which makes the
    whole net commute with mirroring of the input.
    """
    conv = nn.Conv2d if ndim == 2 else nn.Conv3d
    net = nn.Sequential(
        conv(in_ch, 5, 3, padding=1), nn.LeakyReLU(0.1), conv(5, out_ch, 3, padding=1)
    )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in net.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.4)
        if symmetric:
            for layer in (net[0], net[2]):
                dims = range(2, 2 + ndim)
                subsets = [d for r in range(ndim + 1) for d in itertools.combinations(dims, r)]
                flips = [torch.flip(layer.weight, d) for d in subsets]
                layer.weight.copy_(torch.stack(flips).mean(0))
    return net.eval()


def _per_sample(net: nn.Module):
    """Predictor that runs the net one sample at a time, so batching cannot change any bit."""

    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([net(x[i : i + 1]) for i in range(x.shape[0])])

    return predict


def _batched(net: nn.Module):
    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return net(x)

    return predict


def _pointwise(in_ch: int, out_ch: int, seed: int):
    """A 1x1 convolution followed by a nonlinearity: translation equivariant, no context."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_ch, in_ch, generator=gen)
    bias = torch.randn(out_ch, generator=gen)

    def predict(x: torch.Tensor) -> torch.Tensor:
        mixed = torch.einsum("kc,bc...->bk...", weight, x)  # (B, C, *S) -> (B, K, *S)
        shift = bias.view(1, -1, *([1] * (x.ndim - 2)))  # (K,) -> (1, K, 1, .., 1)
        return torch.tanh(mixed + shift) * 3.0

    return predict


def _image(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _naive_sliding_window(
    predictor, image: torch.Tensor, num_classes: int, config: InferenceConfig
) -> np.ndarray:
    """Voxel-by-tile reference in float64 numpy; needs an image at least as large as the patch."""
    spatial = image.shape[1:]
    patch = config.patch_size
    if config.use_gaussian:
        weight = gaussian_importance_map(patch, dtype=torch.float64).numpy()
    else:
        weight = np.ones(patch)
    numerator = np.zeros((num_classes, *spatial))
    denominator = np.zeros(spatial)
    for start in itertools.product(*compute_tile_starts(spatial, patch, config.step_size)):
        region = tuple(slice(s, s + p) for s, p in zip(start, patch))
        tile_logits = predictor(image[(slice(None), *region)][None])[0].double().numpy()
        numerator[(slice(None), *region)] += tile_logits * weight
        denominator[region] += weight
    return numerator / denominator


def _naive_mirror_average(predictor, image: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """Average of flip(predict(flip(image))) over every subset of ``axes``, on the whole image."""
    outputs = []
    for r in range(len(axes) + 1):
        for subset in itertools.combinations(axes, r):
            dims = [a + 1 for a in subset]  # spatial axis -> dim of a (C, *spatial) image
            flipped = torch.flip(image, dims) if dims else image
            pred = predictor(flipped[None])[0]
            outputs.append(torch.flip(pred, dims) if dims else pred)
    return torch.stack(outputs).mean(0)


# ---------------------------------------------------------------------------------------------
# tile starts


@pytest.mark.parametrize("patch", [1, 4, 7, 16])
@pytest.mark.parametrize("step", [0.25, 0.5, 0.77, 1.0])
def test_tile_starts_cover_image_with_minimal_count(patch, step):
    for size in range(patch, patch * 5 + 3):
        (starts,) = compute_tile_starts((size,), (patch,), step)
        assert starts[0] == 0 and starts[-1] == size - patch
        target_step = max(patch * step, 1.0)  # at least one voxel, so starts never repeat
        if size > patch:
            assert len(starts) == math.ceil((size - patch) / target_step) + 1
        covered = np.zeros(size, dtype=bool)
        for s in starts:
            covered[s : s + patch] = True
        assert covered.all()
        if len(starts) > 1:
            gaps = np.diff(starts)
            # Real-valued spacing <= target; rounding starts to voxels moves a gap by < 1.
            assert gaps.min() > 0 and gaps.max() <= math.ceil(target_step)
            assert gaps.max() - gaps.min() <= 1  # spread evenly
        # One tile fewer would leave a gap larger than the target step.
        if len(starts) > 2:
            assert (size - patch) / (len(starts) - 2) > target_step


def test_tile_starts_known_answers():
    assert compute_tile_starts((10,), (4,), 0.5) == [[0, 2, 4, 6]]
    assert compute_tile_starts((12,), (5,), 0.5) == [[0, 2, 5, 7]]  # spacing 7/3, rounded to voxels
    assert compute_tile_starts((64, 128, 40), (32, 128, 48), 0.5) == [[0, 16, 32], [0], [0]]
    assert compute_tile_starts((20, 20), (20, 20), 0.5) == [[0], [0]]  # size == patch: one tile
    # size < patch: a single tile, the caller pads.
    assert compute_tile_starts((3, 30), (8, 10), 1.0) == [[0], [0, 10, 20]]


def test_tile_starts_reject_bad_arguments():
    with pytest.raises(ValueError):
        compute_tile_starts((10, 10), (4,), 0.5)
    with pytest.raises(ValueError):
        compute_tile_starts((10,), (4,), 0.0)


# ---------------------------------------------------------------------------------------------
# Gaussian importance map


@pytest.mark.parametrize("patch", [(9, 13), (8, 12), (7, 10, 5), (1, 6)])
def test_gaussian_map_is_nnunets_blurred_delta(patch):
    """nnU-Net blurs a delta at patch // 2 with sigma = patch / 8, truncated at 4 sigma, which
    reaches past the patch border: the map is the separable Gaussian centred at patch // 2."""
    weight = gaussian_importance_map(patch, dtype=torch.float64)
    assert weight.shape == patch and (weight > 0).all()
    expected = torch.ones((), dtype=torch.float64)
    for p in patch:
        i = torch.arange(p, dtype=torch.float64)
        expected = expected.unsqueeze(-1) * torch.exp(-0.5 * ((i - p // 2) / (p / 8)) ** 2)
    assert torch.allclose(weight, expected / expected.max(), rtol=1e-10, atol=1e-300)
    assert weight[tuple(p // 2 for p in patch)].item() == 1.0
    assert gaussian_importance_map(patch).dtype == torch.float32


def test_gaussian_map_matches_formula_and_sigma():
    weight = gaussian_importance_map((17, 17), dtype=torch.float64)
    sigma = 17 / 8
    for d in range(9):
        expected = math.exp(-0.5 * (d / sigma) ** 2)
        assert weight[8, 8 + d].item() == pytest.approx(expected, rel=1e-12)
        assert weight[8 - d, 8 + d].item() == pytest.approx(expected**2, rel=1e-12)


def test_gaussian_map_has_no_zeros_where_the_dtype_underflows():
    weight = gaussian_importance_map((64, 64, 64), dtype=torch.float16)
    assert (weight > 0).all()
    # The corner underflows in float16 and gets the smallest nonzero value instead.
    assert weight[0, 0, 0] == weight[weight > 0].min()
    with pytest.raises(ValueError):
        gaussian_importance_map((8, 8), sigma_scale=0.0)


# ---------------------------------------------------------------------------------------------
# sliding window


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("use_gaussian", [True, False])
def test_single_tile_equals_plain_forward(ndim, use_gaussian):
    patch = (12, 10) if ndim == 2 else (6, 8, 5)
    net = _conv_net(ndim, 2, 3, seed=ndim)
    image = _image((2, *patch), seed=1)
    config = InferenceConfig(patch_size=patch, use_gaussian=use_gaussian)
    result = sliding_window_predict(_batched(net), image, 3, config)
    with torch.no_grad():
        expected = net(image[None])[0]
    assert result.shape == (3, *patch) and result.dtype == torch.float32
    assert torch.allclose(result, expected, atol=1e-5)


POINTWISE_CASES = [
    ((16, 16), (37, 21), 0.5),
    ((16, 16), (9, 40), 0.5),  # first axis smaller than the patch: padded
    ((15, 9), (5, 3), 0.3),  # smaller than the patch on every axis
    ((8, 8), (8, 31), 1.0),
    ((6, 7, 5), (13, 7, 11), 0.5),
    ((6, 7, 5), (3, 19, 5), 0.35),
    ((4, 4, 4), (9, 2, 17), 0.8),
]


@pytest.mark.parametrize("patch, size, step", POINTWISE_CASES)
@pytest.mark.parametrize("use_gaussian", [True, False])
def test_pointwise_predictor_equals_whole_image(patch, size, step, use_gaussian):
    predictor = _pointwise(2, 3, seed=7)
    image = _image((2, *size), seed=3)
    config = InferenceConfig(
        patch_size=patch, step_size=step, use_gaussian=use_gaussian, tile_batch_size=3
    )
    result = sliding_window_predict(predictor, image, 3, config)
    assert result.shape == (3, *size)
    assert torch.allclose(result, predictor(image[None])[0], atol=1e-5)


@pytest.mark.parametrize(
    "patch, size, step",
    [((8, 8), (21, 13), 0.5), ((8, 8), (8, 30), 0.25), ((5, 6, 4), (11, 6, 9), 0.5)],
)
@pytest.mark.parametrize("use_gaussian", [True, False])
def test_conv_net_matches_naive_weighted_average(patch, size, step, use_gaussian):
    net = _conv_net(len(patch), 1, 2, seed=11)
    image = _image((1, *size), seed=5)
    config = InferenceConfig(
        patch_size=patch, step_size=step, use_gaussian=use_gaussian, tile_batch_size=2
    )
    result = sliding_window_predict(_batched(net), image, 2, config)
    expected = _naive_sliding_window(_batched(net), image, 2, config)
    np.testing.assert_allclose(result.numpy(), expected, atol=1e-5)
    # The tiles see different context, so the result is not the whole-image forward pass.
    with torch.no_grad():
        assert not torch.allclose(result, net(image[None])[0], atol=1e-3)


def test_padding_is_symmetric_zero_padding():
    """A net with context sees zeros around an image smaller than the patch, split evenly."""
    net = _conv_net(2, 1, 2, seed=4)
    image = _image((1, 5, 9), seed=2)
    config = InferenceConfig(patch_size=(8, 12))
    result = sliding_window_predict(_batched(net), image, 2, config)
    padded = torch.nn.functional.pad(image, (1, 2, 1, 2))  # (5, 9) -> (8, 12): 1 before, 2 after
    with torch.no_grad():
        expected = net(padded[None])[0, :, 1:6, 1:10]
    assert torch.allclose(result, expected, atol=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
def test_mirroring_with_symmetric_predictor_changes_nothing(ndim):
    patch = (8, 8) if ndim == 2 else (6, 6, 6)
    size = (19, 11) if ndim == 2 else (9, 13, 6)
    net = _conv_net(ndim, 2, 2, seed=3, symmetric=True)
    image = _image((2, *size), seed=8)
    axes = tuple(range(ndim))
    plain = sliding_window_predict(_batched(net), image, 2, InferenceConfig(patch_size=patch))
    mirror_config = InferenceConfig(patch_size=patch, mirror_axes=axes)
    mirrored = sliding_window_predict(_batched(net), image, 2, mirror_config)
    assert torch.allclose(plain, mirrored, atol=1e-5)


@pytest.mark.parametrize("ndim, axes", [(2, (0, 1)), (2, (1,)), (3, (0, 1, 2)), (3, (0, 2))])
def test_mirroring_matches_naive_flips_on_single_tile(ndim, axes):
    patch = (10, 8) if ndim == 2 else (6, 5, 7)
    net = _conv_net(ndim, 1, 3, seed=9)
    image = _image((1, *patch), seed=4)
    calls = []

    def predictor(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return _batched(net)(x)

    config = InferenceConfig(patch_size=patch, mirror_axes=axes)
    result = sliding_window_predict(predictor, image, 3, config)
    assert len(calls) == 2 ** len(axes)
    expected = _naive_mirror_average(_batched(net), image, axes)
    assert torch.allclose(result, expected, atol=1e-5)
    # The net is not mirror-symmetric, so mirroring must make a difference.
    plain = sliding_window_predict(_batched(net), image, 3, InferenceConfig(patch_size=patch))
    assert not torch.allclose(result, plain, atol=1e-3)


@pytest.mark.slow
def test_mirroring_over_many_tiles_equals_mirror_averaged_predictor():
    net = _conv_net(3, 1, 2, seed=12)
    image = _image((1, 11, 9, 7), seed=6)
    axes = (0, 1, 2)

    def averaged(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([_naive_mirror_average(_batched(net), tile, axes) for tile in x])

    patch = (6, 5, 4)
    config = InferenceConfig(patch_size=patch, mirror_axes=axes, tile_batch_size=4)
    result = sliding_window_predict(_batched(net), image, 2, config)
    expected = sliding_window_predict(averaged, image, 2, InferenceConfig(patch_size=patch))
    assert torch.allclose(result, expected, atol=1e-5)


@pytest.mark.parametrize("mirror_axes", [(), (0, 1)])
def test_tile_batch_size_does_not_change_result(mirror_axes):
    net = _conv_net(2, 2, 3, seed=2)
    image = _image((2, 23, 17), seed=9)
    results = {}
    for batch_size in (1, 4, 7):
        calls = []

        def predictor(x: torch.Tensor) -> torch.Tensor:
            calls.append(x.shape[0])
            return _per_sample(net)(x)

        config = InferenceConfig(
            patch_size=(8, 8), mirror_axes=mirror_axes, tile_batch_size=batch_size
        )
        results[batch_size] = sliding_window_predict(predictor, image, 3, config)
        num_tiles = 5 * 4  # ceil(15 / 4) + 1 by ceil(9 / 4) + 1
        assert sum(calls) == num_tiles * 2 ** len(mirror_axes)
        assert max(calls) == min(batch_size, num_tiles)
    assert torch.equal(results[1], results[4]) and torch.equal(results[1], results[7])


@pytest.mark.parametrize("ndim", [2, 3])
def test_batched_mirrors_give_the_same_result_in_fewer_calls(ndim):
    net = _conv_net(ndim, 1, 3, seed=4)
    image = _image((1, 13, 11) if ndim == 2 else (1, 9, 8, 7), seed=5)
    patch, axes = ((8, 8), (0, 1)) if ndim == 2 else ((6, 5, 4), (0, 2))
    results, calls = {}, {}
    for batched in (False, True):
        sizes = []

        def predictor(x: torch.Tensor) -> torch.Tensor:
            sizes.append(x.shape[0])
            return _per_sample(net)(x)

        config = InferenceConfig(patch_size=patch, mirror_axes=axes, tile_batch_size=3,
                                 batch_mirrors=batched)
        results[batched], calls[batched] = sliding_window_predict(predictor, image, 3, config), sizes
    assert sum(calls[True]) == sum(calls[False])  # every tile in all 4 mirrorings, both ways
    assert len(calls[True]) * 4 == len(calls[False]) and max(calls[True]) == 12
    torch.testing.assert_close(results[True], results[False], rtol=1e-5, atol=1e-6)
    plain = sliding_window_predict(_per_sample(net), image, 3, InferenceConfig(patch_size=patch))
    assert not torch.allclose(results[True], plain, atol=1e-3)


@pytest.mark.parametrize("mirror_axes", [(), (1,)])
def test_predict_slices_2d_equals_loop_over_slices(mirror_axes):
    net = _conv_net(2, 2, 3, seed=6)
    volume = _image((2, 5, 13, 6), seed=10)  # X smaller than the patch: padded
    config = InferenceConfig(patch_size=(8, 8), mirror_axes=mirror_axes, tile_batch_size=3)
    result = predict_slices_2d(_per_sample(net), volume, 3, config)
    predictor = _per_sample(net)
    per_slice = [sliding_window_predict(predictor, volume[:, z], 3, config) for z in range(5)]
    expected = torch.stack(per_slice, dim=1)  # 5 x (K, Y, X) -> (K, Z, Y, X)
    assert result.shape == (3, 5, 13, 6) and result.is_contiguous()
    assert torch.equal(result, expected)


def test_output_dtype_device_and_progress(capsys):
    predictor = _pointwise(1, 2, seed=1)
    image = _image((1, 12, 12), seed=0).double()
    config = InferenceConfig(patch_size=(8, 8))
    result = sliding_window_predict(predictor, image, 2, config, out_device="cpu", progress=True)
    assert result.dtype == torch.float32 and result.device == torch.device("cpu")
    assert "tile" in capsys.readouterr().err


def test_config_and_argument_errors():
    with pytest.raises(InputError):
        InferenceConfig(patch_size=(8, 8), step_size=1.5)
    with pytest.raises(InputError):
        InferenceConfig(patch_size=(8, 8), mirror_axes=(2,))
    with pytest.raises(InputError):
        InferenceConfig(patch_size=(8, 8), mirror_axes=(0, 0))
    with pytest.raises(InputError):
        InferenceConfig(patch_size=(8,))
    with pytest.raises(InputError):
        InferenceConfig(patch_size=(8, 8), tile_batch_size=0)
    # Lists (e.g. from JSON) become tuples.
    assert InferenceConfig(patch_size=[8, 8], mirror_axes=[0]).patch_size == (8, 8)
    config = InferenceConfig(patch_size=(8, 8))
    with pytest.raises(InputError):
        sliding_window_predict(_pointwise(1, 2, 0), _image((1, 8, 8, 8), 0), 2, config)
    with pytest.raises(InputError):
        predict_slices_2d(_pointwise(1, 2, 0), _image((1, 8, 8), 0), 2, config)
    with pytest.raises(RuntimeError, match="predictor returned shape"):
        sliding_window_predict(_pointwise(1, 3, 0), _image((1, 8, 8), 0), 2, config)
