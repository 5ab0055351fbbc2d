"""Sliding-window inference over an arbitrary patch predictor.

The scheme follows nnU-Net (Isensee et al., "nnU-Net: a self-configuring method for deep
learning-based biomedical image segmentation", Nature Methods 2021): overlapping tiles
with a step of half a patch, Gaussian importance weighting so that tile centres count
more than tile borders, and test-time augmentation by mirroring along the allowed axes.

Everything here is a pure function of its arguments. The predictor is any callable mapping
a batch of tiles ``(B, C, *patch_size)`` to logits ``(B, K, *patch_size)``; the caller wraps
the network, ``torch.no_grad`` and autocast.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from tqdm import tqdm

from sslunet.errors import InputError

Predictor = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class InferenceConfig:
    """How to tile an image and combine the tile predictions.

    Attributes:
        patch_size: Spatial tile size, 2 or 3 entries (the network's training patch).
        step_size: Distance between tile starts as a fraction of the patch, in (0, 1].
            Smaller means more overlap and more tiles.
        use_gaussian: Weight each tile by a Gaussian importance map (sigma = patch / 8);
            otherwise every voxel of a tile counts the same.
        mirror_axes: Spatial axes (0-based over the spatial dimensions) to mirror for
            test-time augmentation; every subset of them is used. ``()`` disables it.
        tile_batch_size: Number of tiles sent to the predictor in one call.
        batch_mirrors: Send a tile batch's mirrorings through the predictor in one call
            (``tile_batch_size x 2^len(mirror_axes)`` tiles): fewer, larger calls, which pay
            on a GPU; on a CPU larger batches run slower per tile (see
            :func:`sslunet.inference.predictor.tile_batch_size`).
    """

    patch_size: tuple[int, ...]
    step_size: float = 0.5
    use_gaussian: bool = True
    mirror_axes: tuple[int, ...] = ()
    tile_batch_size: int = 1
    batch_mirrors: bool = False

    def __post_init__(self) -> None:
        # Accept lists (e.g. read from JSON) but store tuples so the config stays hashable.
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        object.__setattr__(self, "mirror_axes", tuple(int(a) for a in self.mirror_axes))
        ndim = len(self.patch_size)
        if ndim not in (2, 3) or min(self.patch_size) < 1:
            raise InputError(f"patch size must have 2 or 3 positive entries, got {self.patch_size}")
        if not 0.0 < self.step_size <= 1.0:
            raise InputError(f"step size must be in (0, 1], got {self.step_size}")
        if self.tile_batch_size < 1:
            raise InputError(f"tile batch size must be at least 1, got {self.tile_batch_size}")
        bad_axes = [a for a in self.mirror_axes if not 0 <= a < ndim]
        if bad_axes or len(set(self.mirror_axes)) != len(self.mirror_axes):
            raise InputError(
                f"mirror axes must be distinct spatial axes in 0..{ndim - 1}, "
                f"got {self.mirror_axes}"
            )


def compute_tile_starts(
    image_size: Sequence[int], patch_size: Sequence[int], step_size: float
) -> list[list[int]]:
    """Start coordinates of the tiles along each spatial axis.

    Per axis, ``ceil((size - patch) / (patch * step_size)) + 1`` tiles are spread evenly so
    that the first starts at 0 and the last at ``size - patch`` (nnU-Net's rule). An axis
    with ``size <= patch`` gets the single start 0: the caller pads such axes to the patch.
    The target step is at least one voxel, so tiny patches never produce duplicate starts.

    Args:
        image_size: Spatial size of the image.
        patch_size: Spatial size of a tile, same length as ``image_size``.
        step_size: Target distance between starts as a fraction of the patch, in (0, 1].

    Returns:
        One ascending list of start indices per spatial axis.
    """
    if len(image_size) != len(patch_size):
        raise ValueError(
            f"image size {tuple(image_size)} and patch size {tuple(patch_size)} differ in length"
        )
    if not 0.0 < step_size <= 1.0:
        raise ValueError(f"step size must be in (0, 1], got {step_size}")
    starts: list[list[int]] = []
    for size, patch in zip(image_size, patch_size):
        if size <= patch:
            starts.append([0])
            continue
        target_step = max(patch * step_size, 1.0)
        num_steps = math.ceil((size - patch) / target_step) + 1
        spacing = (size - patch) / (num_steps - 1)
        starts.append([int(round(spacing * i)) for i in range(num_steps)])
    return starts


def gaussian_importance_map(
    patch_size: Sequence[int],
    sigma_scale: float = 1.0 / 8.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Gaussian weight map for blending overlapping tiles, as nnU-Net v2 computes it.

    nnU-Net (Isensee et al. 2021) places a delta at ``patch // 2`` and blurs it with
    ``scipy.ndimage.gaussian_filter`` (sigma = ``sigma_scale`` x patch per axis, zero outside,
    truncated at 4 sigma). We use the same map, so that a model exported to nnU-Net
    (``sslunet_export --to-nnunet``) blends its tiles the same way and predicts the same masks.
    The peak is scaled to 1 (nnU-Net: 10; the scale cancels when accumulated logits are divided
    by accumulated weights). For even patch sizes the peak is half a voxel off-centre, as in
    nnU-Net; mirroring TTA is unaffected (tiles are flipped back before they are weighted).

    Args:
        patch_size: Spatial size of the map.
        sigma_scale: Standard deviation per axis as a fraction of the patch size.
        device: Device of the returned map.
        dtype: Dtype of the returned map.

    Returns:
        Tensor of shape ``patch_size`` with peak 1 and no zeros: entries that underflow in
        ``dtype`` are replaced by the smallest nonzero entry, so every voxel keeps a weight.
    """
    if sigma_scale <= 0:
        raise ValueError(f"sigma scale must be positive, got {sigma_scale}")
    delta = np.zeros(tuple(patch_size), dtype=np.float64)
    delta[tuple(p // 2 for p in patch_size)] = 1.0
    blurred = ndimage.gaussian_filter(delta, [p * sigma_scale for p in patch_size], 0,
                                      mode="constant", cval=0.0)
    weights = torch.from_numpy(blurred / blurred.max()).to(dtype=dtype)
    smallest = weights[weights > 0].min()
    weights = torch.where(weights > 0, weights, smallest)
    return weights.to(device)


def sliding_window_predict(
    predictor: Predictor,
    image: torch.Tensor,
    num_classes: int,
    config: InferenceConfig,
    out_device: torch.device | str | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Predict a whole image by blending overlapping tile predictions.

    Args:
        predictor: Maps tiles ``(B, C, *patch_size)`` to logits ``(B, K, *patch_size)``.
        image: ``(C, *spatial)`` with 2 or 3 spatial axes, matching ``config.patch_size``.
            Tiles are cut on the image's device, so that is where the predictor runs.
        num_classes: ``K``, the number of output channels of the predictor.
        config: Tiling, weighting, mirroring and batching settings.
        out_device: Device of the accumulation buffers and the result (e.g. ``"cpu"`` for
            volumes too large for accelerator memory); defaults to the image's device.
        progress: Show a progress bar over tiles.

    Returns:
        Averaged logits ``(K, *spatial)``, float32, on ``out_device``.
    """
    ndim = len(config.patch_size)
    if image.ndim != ndim + 1:
        raise InputError(
            f"image of shape {tuple(image.shape)} does not have 1 channel axis + {ndim} "
            f"spatial axes to match the {ndim}D patch size {config.patch_size}"
        )
    stack = image.unsqueeze(0)  # (C, *spatial) -> (1, C, *spatial)
    logits = _predict_stack(predictor, stack, num_classes, config, out_device, progress)
    return logits[0]


def predict_slices_2d(
    predictor: Predictor,
    volume: torch.Tensor,
    num_classes: int,
    config: InferenceConfig,
    out_device: torch.device | str | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Apply a 2D sliding window to every axial slice of a 3D volume.

    Tiles of different slices share predictor calls, so small slices still fill a batch.

    Args:
        predictor: 2D predictor, tiles ``(B, C, Y, X)`` to logits ``(B, K, Y, X)``.
        volume: ``(C, Z, Y, X)``; slices are taken along ``Z``.
        num_classes: ``K``.
        config: Settings with a 2D ``patch_size``; ``mirror_axes`` refer to ``(Y, X)``.
        out_device: Device of the result; defaults to the volume's device.
        progress: Show a progress bar over tiles.

    Returns:
        Averaged logits ``(K, Z, Y, X)``, float32, on ``out_device``.
    """
    if len(config.patch_size) != 2:
        raise InputError(f"slice-wise prediction needs a 2D patch size, got {config.patch_size}")
    if volume.ndim != 4:
        raise InputError(
            f"slice-wise prediction needs a (C, Z, Y, X) volume, got shape {tuple(volume.shape)}"
        )
    slices = volume.permute(1, 0, 2, 3)  # (C, Z, Y, X) -> (Z, C, Y, X): one 2D image per slice
    logits = _predict_stack(predictor, slices, num_classes, config, out_device, progress)
    return logits.permute(1, 0, 2, 3).contiguous()  # (Z, K, Y, X) -> (K, Z, Y, X)


def _predict_stack(
    predictor: Predictor,
    images: torch.Tensor,
    num_classes: int,
    config: InferenceConfig,
    out_device: torch.device | str | None,
    progress: bool,
) -> torch.Tensor:
    """Sliding window over same-sized images ``(N, C, *spatial)`` -> ``(N, K, *spatial)``."""
    out_device = images.device if out_device is None else torch.device(out_device)
    padded, crop = _pad_to_patch(images, config.patch_size)
    num_images, spatial = padded.shape[0], tuple(padded.shape[2:])
    starts = compute_tile_starts(spatial, config.patch_size, config.step_size)
    tiles = list(itertools.product(range(num_images), *starts))
    if config.use_gaussian:
        weight = gaussian_importance_map(config.patch_size, device=images.device)
    else:
        weight = torch.ones(config.patch_size, device=images.device)
    weight_out = weight.to(out_device)
    logit_sum = torch.zeros(
        (num_images, num_classes, *spatial), dtype=torch.float32, device=out_device
    )
    # One weight channel suffices: the weights are the same for every class.
    weight_sum = torch.zeros((num_images, 1, *spatial), dtype=torch.float32, device=out_device)
    with tqdm(total=len(tiles), disable=not progress, desc="sliding window", unit="tile") as bar:
        for first in range(0, len(tiles), config.tile_batch_size):
            batch = tiles[first : first + config.tile_batch_size]
            regions = [(n, slice(None), *_tile_slices(s, config.patch_size)) for n, *s in batch]
            inputs = torch.stack([padded[region] for region in regions])  # (B, C, *patch)
            logits = _predict_mirrored(predictor, inputs, num_classes, config.mirror_axes,
                                       config.batch_mirrors)
            weighted = (logits * weight).to(out_device)  # (B, K, *patch) * (*patch) broadcasts
            for i, region in enumerate(regions):
                logit_sum[region] += weighted[i]
                weight_sum[region] += weight_out
            bar.update(len(batch))
    logit_sum /= weight_sum  # every voxel is covered by a tile with positive weight
    if crop is None:
        return logit_sum
    return logit_sum[(slice(None), slice(None), *crop)].contiguous()


def _pad_to_patch(
    images: torch.Tensor, patch_size: Sequence[int]
) -> tuple[torch.Tensor, tuple[slice, ...] | None]:
    """Zero-pad spatial axes smaller than the patch, symmetrically.

    Returns:
        The padded ``(N, C, *spatial)`` stack and the spatial slices that crop the padding
        back off, or ``None`` for the slices when nothing was padded (no copy is made then).
    """
    sizes = images.shape[2:]
    before = [max(p - s, 0) // 2 for s, p in zip(sizes, patch_size)]
    after = [max(p - s, 0) - b for s, p, b in zip(sizes, patch_size, before)]
    if not any(before) and not any(after):
        return images, None
    # F.pad takes (before, after) pairs starting from the last axis.
    pad = [amount for b, a in zip(reversed(before), reversed(after)) for amount in (b, a)]
    crop = tuple(slice(b, b + s) for b, s in zip(before, sizes))
    return F.pad(images, pad, mode="constant", value=0.0), crop


def _tile_slices(start: Sequence[int], patch_size: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(s, s + p) for s, p in zip(start, patch_size))


def _predict_mirrored(
    predictor: Predictor, tiles: torch.Tensor, num_classes: int, mirror_axes: Sequence[int],
    batch_mirrors: bool = False,
) -> torch.Tensor:
    """Average the predictor over mirrorings of ``tiles`` along every subset of ``mirror_axes``.

    Args:
        predictor: Tiles ``(B, C, *patch)`` -> logits ``(B, K, *patch)``.
        tiles: ``(B, C, *patch)``.
        num_classes: ``K``, checked against the predictor's output.
        mirror_axes: Spatial axes (0-based over ``patch``) to mirror.
        batch_mirrors: One predictor call for all ``M`` mirrorings (``M * B`` tiles) instead of
            one call per mirroring (memory per call: one tile batch).

    Returns:
        Float32 logits ``(B, K, *patch)`` in the original orientation.
    """
    dims = [axis + 2 for axis in mirror_axes]  # spatial axis -> tensor dim after (B, C)
    flips = [f for r in range(len(dims) + 1) for f in itertools.combinations(dims, r)]
    if batch_mirrors and len(flips) > 1:
        # (M * B, C, *patch): mirroring m of tile b at index m * B + b
        stacked = torch.cat([torch.flip(tiles, f) if f else tiles for f in flips])
        logits = _call_predictor(predictor, stacked, num_classes)
        parts = logits.split(tiles.shape[0])  # M x (B, K, *patch)
        restored = [torch.flip(p, f) if f else p for p, f in zip(parts, flips)]
        return torch.stack(restored).mean(0)  # (M, B, K, *patch) -> (B, K, *patch)
    total: torch.Tensor | None = None
    for flip_dims in flips:
        inputs = torch.flip(tiles, flip_dims) if flip_dims else tiles
        logits = _call_predictor(predictor, inputs, num_classes)
        if flip_dims:
            logits = torch.flip(logits, flip_dims)
        total = logits if total is None else total + logits
    assert total is not None
    return total / len(flips) if len(flips) > 1 else total


def _call_predictor(predictor: Predictor, tiles: torch.Tensor, num_classes: int) -> torch.Tensor:
    logits = predictor(tiles)
    expected = (tiles.shape[0], num_classes, *tiles.shape[2:])
    if tuple(logits.shape) != expected:
        raise RuntimeError(
            f"predictor returned shape {tuple(logits.shape)} for tiles {tuple(tiles.shape)}; "
            f"expected {expected}"
        )
    return logits.float()
