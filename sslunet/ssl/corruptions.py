"""Image corruptions for restoration pretext tasks, on one image ``(C, *spatial)`` at a time.

Every corruption is split, like MONAI's randomize/apply, into ``draw_*`` (all randomness, from
an explicit ``np.random.Generator``, into a frozen params dataclass) and ``apply_*`` (pure).
The one-call helpers (``context_restoration``, ``genesis_corrupt``, ...) draw and apply.
Outputs keep the input's shape and dtype; boxes are shared by all channels.

* Context restoration (Chen et al. 2019, Medical Image Analysis 58), our stand-in for the
  regression arm of Umapathy et al. (2022), whose exact pretext task is unpublished.
* Models Genesis (Zhou et al. 2019 MICCAI; 2021 MedIA): nonlinear intensity curve, local pixel
  shuffling, in-painting and out-painting, composed with the reference probabilities.

MAE / SparK block masking is in :mod:`sslunet.ssl.masking`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sslunet.utils.shapes import check_channels_first, per_axis


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in spatial coordinates: ``start`` (lowest index) and ``size`` per axis."""

    start: tuple[int, ...]
    size: tuple[int, ...]

    def index(self) -> tuple[slice, ...]:
        """Index into a ``(C, *spatial)`` array: all channels, this box."""
        return (slice(None), *(slice(s, s + n) for s, n in zip(self.start, self.size)))

    def overlaps(self, other: Box) -> bool:
        return all(
            a < b + m and b < a + n
            for a, n, b, m in zip(self.start, self.size, other.start, other.size)
        )


def _random_box(shape: Sequence[int], size: Sequence[int], rng: np.random.Generator) -> Box:
    start = tuple(int(rng.integers(0, s - n + 1)) for s, n in zip(shape, size))
    return Box(start, tuple(int(n) for n in size))


def _channel_range(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel min and max, shaped ``(C, 1, ..., 1)`` for broadcasting."""
    axes = tuple(range(1, image.ndim))
    return image.min(axis=axes, keepdims=True), image.max(axis=axes, keepdims=True)


# --- context restoration ----------------------------------------------------------------------


@dataclass(frozen=True)
class ContextRestorationParams:
    pairs: tuple[tuple[Box, Box], ...]


def draw_context_restoration(
    spatial_shape: Sequence[int],
    rng: np.random.Generator,
    num_swaps: int = 10,
    patch_size: int | Sequence[int] = 5,
    max_tries: int = 1000,
) -> ContextRestorationParams:
    """Draw ``num_swaps`` pairs of patches, all ``2 * num_swaps`` mutually non-overlapping.

    Chen et al. swap random patch pairs repeatedly; we keep every patch disjoint (our choice)
    so each swap is a clean permutation of voxels. Defaults: 10 pairs of 5x5 (our notes).

    Args:
        spatial_shape: image size per spatial axis.
        rng: random generator.
        num_swaps: number of pairs N >= 1.
        patch_size: patch edge, one int or one per axis (anisotropic 3D patches).
        max_tries: placement attempts per patch before giving up.

    Raises:
        ValueError: invalid arguments, or the patches do not fit without overlapping.
    """
    size = per_axis(patch_size, len(spatial_shape), "patch_size")
    if num_swaps < 1:
        raise ValueError(f"num_swaps must be >= 1, got {num_swaps}")
    if any(n > s for n, s in zip(size, spatial_shape)):
        raise ValueError(f"patch {size} larger than the image {tuple(spatial_shape)}")
    boxes: list[Box] = []
    for _ in range(2 * num_swaps):
        for _ in range(max_tries):
            box = _random_box(spatial_shape, size, rng)
            if not any(box.overlaps(b) for b in boxes):
                boxes.append(box)
                break
        else:
            raise ValueError(
                f"cannot place {2 * num_swaps} disjoint {size} patches in {tuple(spatial_shape)}"
            )
    return ContextRestorationParams(tuple(zip(boxes[0::2], boxes[1::2])))


def apply_context_restoration(image: np.ndarray, params: ContextRestorationParams) -> np.ndarray:
    """Swap the contents of each patch pair (all channels)."""
    check_channels_first(image)
    out = image.copy()
    for a, b in params.pairs:
        out[a.index()], out[b.index()] = image[b.index()], image[a.index()]
    return out


def context_restoration(
    image: np.ndarray,
    rng: np.random.Generator,
    num_swaps: int = 10,
    patch_size: int | Sequence[int] = 5,
) -> np.ndarray:
    """Draw and apply :func:`draw_context_restoration` to ``image`` ``(C, *spatial)``."""
    check_channels_first(image)
    return apply_context_restoration(
        image, draw_context_restoration(image.shape[1:], rng, num_swaps, patch_size)
    )


# --- Models Genesis: nonlinear intensity transformation ---------------------------------------


@dataclass(frozen=True)
class NonlinearParams:
    """Cubic Bezier from (0,0) to (1,1) with control points ``p1``, ``p2``; ``invert`` flips it."""

    p1: tuple[float, float]
    p2: tuple[float, float]
    invert: bool


def draw_nonlinear(rng: np.random.Generator) -> NonlinearParams:
    """Random control points in [0,1]^2; half of the curves are decreasing, as in the reference."""
    p1 = (float(rng.random()), float(rng.random()))
    p2 = (float(rng.random()), float(rng.random()))
    return NonlinearParams(p1, p2, bool(rng.random() < 0.5))


def bezier_lookup(params: NonlinearParams, num: int = 1001) -> tuple[np.ndarray, np.ndarray]:
    """Sample the intensity curve: ``(xs, ys)``, ``xs`` increasing from 0 to 1.

    With both end points at 0 and 1 and control points in [0,1], x(t) and y(t) are both
    non-decreasing in t, so the curve is a monotone function; sorting only removes rounding.
    ``invert`` pairs ascending x with descending y, like the reference code's other branch.
    """
    t = np.linspace(0.0, 1.0, num)
    w = np.stack([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3])  # (4, num)
    px = np.array([0.0, params.p1[0], params.p2[0], 1.0])
    py = np.array([0.0, params.p1[1], params.p2[1], 1.0])
    xs, ys = np.sort(px @ w), np.sort(py @ w)
    return xs, (ys[::-1].copy() if params.invert else ys)


def apply_nonlinear(image: np.ndarray, params: NonlinearParams) -> np.ndarray:
    """Map intensities through the curve, per channel.

    Models Genesis works on images in [0, 1]; ours are z-scored, so each channel is rescaled to
    [0, 1] by its min/max, mapped, and scaled back (our choice). Constant channels are kept.
    """
    check_channels_first(image)
    lo, hi = _channel_range(image.astype(np.float64))
    span = np.where(hi > lo, hi - lo, 1.0)
    xs, ys = bezier_lookup(params)
    mapped = np.interp((image - lo) / span, xs, ys) * span + lo
    return np.where(hi > lo, mapped, image).astype(image.dtype, copy=False)


# --- Models Genesis: local pixel shuffling ----------------------------------------------------


@dataclass(frozen=True, eq=False)
class ShuffleParams:
    """Blocks to shuffle, as arrays, and the seed of their voxel permutations.

    ``starts`` and ``sizes`` are ``(num_blocks, ndim)`` integer arrays (arrays rather than one
    :class:`Box` per block: a thousand small objects per image cost more than the shuffle).
    """

    starts: np.ndarray
    sizes: np.ndarray
    seed: int

    @classmethod
    def from_boxes(cls, boxes: Sequence[Box], seed: int) -> ShuffleParams:
        return cls(np.array([b.start for b in boxes]), np.array([b.size for b in boxes]), seed)

    @property
    def boxes(self) -> tuple[Box, ...]:
        return tuple(
            Box(tuple(map(int, a)), tuple(map(int, n))) for a, n in zip(self.starts, self.sizes)
        )


def draw_local_shuffle(
    spatial_shape: Sequence[int],
    rng: np.random.Generator,
    num_blocks: int = 1000,
    max_block: int | Sequence[int] | None = None,
) -> ShuffleParams:
    """Draw ``num_blocks`` blocks with sizes uniform in ``[1, max_block]`` per axis.

    The reference code uses 10000 blocks on 64x64x32 crops with ``max_block = size // 10``;
    our default is 1000 blocks and ``max(1, size // 10)``.
    """
    ndim = len(spatial_shape)
    if num_blocks < 1:
        raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
    if max_block is None:
        limit = tuple(max(1, s // 10) for s in spatial_shape)
    else:
        limit = tuple(
            min(m, s) for m, s in zip(per_axis(max_block, ndim, "max_block"), spatial_shape)
        )
    sizes = rng.integers(1, np.array(limit) + 1, size=(num_blocks, ndim))  # (B, ndim)
    starts = rng.integers(0, np.array(spatial_shape) - sizes + 1)  # (B, ndim)
    return ShuffleParams(starts, sizes, int(rng.integers(0, 2**63 - 1)))


def _block_voxels(shape: Sequence[int], starts: np.ndarray, sizes: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of every block's voxels, block after block, and the block each belongs to.

    Both ``(T,)`` with ``T`` the summed block volumes; within a block the voxels are in C order.
    """
    # int32 halves the memory traffic of these (T,) arrays; patches have far fewer voxels
    starts, sizes = starts.astype(np.int32), sizes.astype(np.int32)
    counts = np.prod(sizes, axis=1)  # (B,)
    strides = np.cumprod((1, *shape[:0:-1]))[::-1].astype(np.int32)  # (ndim,) C-order strides
    flat = np.repeat(starts @ strides, counts)  # (T,) each block's first voxel
    first = np.repeat(np.cumsum(counts) - counts, counts)  # (T,) position of its block's start
    local = np.arange(counts.sum(), dtype=np.int32) - first  # (T,) index within its block
    for axis in reversed(range(len(shape))):  # unravel the index within each block's own size
        n = np.repeat(sizes[:, axis], counts)  # (T,)
        flat += (local % n) * strides[axis]
        local //= n
    return flat, np.repeat(np.arange(len(counts)), counts)


def apply_local_shuffle(image: np.ndarray, params: ShuffleParams) -> np.ndarray:
    """Permute the voxels inside each block (same permutation for all channels).

    As in the reference, blocks are read from the original image and written to the output,
    so where blocks overlap the later one wins. All blocks at once (a loop over a thousand
    blocks cost ~10 ms per patch): sorting by block index plus a uniform key in [0, 1) gives
    a uniform random permutation inside every block, and each voxel takes the value of the
    last block that writes it.
    """
    check_channels_first(image)
    c = image.shape[0]
    dest, block_of = _block_voxels(image.shape[1:], params.starts, params.sizes)  # (T,), (T,)
    keys = block_of + np.random.default_rng(params.seed).random(dest.size)  # (T,)
    src = dest[np.argsort(keys)]  # (T,): block by block, shuffled inside each
    writer = np.full(image[0].size, -1)  # (V,) last position in dest that writes each voxel
    np.maximum.at(writer, dest, np.arange(dest.size))
    covered = np.flatnonzero(writer >= 0)
    flat = image.reshape(c, -1)  # (C, V)
    out = flat.copy()
    out[:, covered] = flat[:, src[writer[covered]]]
    return out.reshape(image.shape)


# --- Models Genesis: in-painting and out-painting ---------------------------------------------


@dataclass(frozen=True)
class PaintParams:
    """Boxes; in-painting fills them with noise, out-painting keeps only them. ``seed``: noise."""

    boxes: tuple[Box, ...]
    outpaint: bool
    seed: int


def draw_paint(
    spatial_shape: Sequence[int],
    rng: np.random.Generator,
    outpaint: bool,
    max_boxes: int = 5,
    p_more: float = 0.95,
) -> PaintParams:
    """Draw in-painting (``outpaint=False``) or out-painting boxes.

    Reference sizes: in-paint ``[s//6, s//3]``; out-paint keeps ``s - [3s//7, 4s//7]``.

    The reference draws up to 5 boxes (each further one with probability 0.95) and may draw
    none; we always draw at least one (our choice) and drop its 3-voxel border margin.
    """
    if max_boxes < 1 or not 0 <= p_more <= 1:
        raise ValueError(f"need max_boxes >= 1 and p_more in [0, 1], got {max_boxes}, {p_more}")
    boxes = []
    while not boxes or (len(boxes) < max_boxes and rng.random() < p_more):
        if outpaint:
            size = [s - int(rng.integers(3 * s // 7, 4 * s // 7 + 1)) for s in spatial_shape]
        else:
            size = [int(rng.integers(s // 6, s // 3 + 1)) for s in spatial_shape]
        size = [min(max(n, 1), s) for n, s in zip(size, spatial_shape)]
        boxes.append(_random_box(spatial_shape, size, rng))
    return PaintParams(tuple(boxes), outpaint, int(rng.integers(0, 2**63 - 1)))


def apply_paint(image: np.ndarray, params: PaintParams) -> np.ndarray:
    """Fill with uniform noise in each channel's [min, max] (reference: [0, 1) images)."""
    check_channels_first(image)
    lo, hi = _channel_range(image)
    noise_rng = np.random.default_rng(params.seed)
    noise = (lo + (hi - lo) * noise_rng.random(image.shape)).astype(image.dtype)
    out = noise if params.outpaint else image.copy()
    src = image if params.outpaint else noise
    for box in params.boxes:
        out[box.index()] = src[box.index()]
    return out


# --- Models Genesis: composition --------------------------------------------------------------


@dataclass(frozen=True)
class GenesisParams:
    """Which steps run (None = skipped), applied in the reference order shuffle, curve, paint."""

    shuffle: ShuffleParams | None
    nonlinear: NonlinearParams | None
    paint: PaintParams | None


def _check_prob(**probs: float) -> None:
    for name, p in probs.items():
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {p}")


def draw_genesis(
    spatial_shape: Sequence[int],
    rng: np.random.Generator,
    p_nonlinear: float = 0.9,
    p_local_shuffle: float = 0.5,
    p_paint: float = 0.9,
    p_outpaint_given_paint: float = 0.8,
) -> GenesisParams:
    """Draw a Models Genesis corruption with the reference probabilities (also nnssl's).

    The reference's flip (p = 0.4) mirrors input *and* target, so it is an augmentation that
    belongs to the caller's data pipeline, not to this input-only corruption.
    """
    _check_prob(
        p_nonlinear=p_nonlinear,
        p_local_shuffle=p_local_shuffle,
        p_paint=p_paint,
        p_outpaint_given_paint=p_outpaint_given_paint,
    )
    shuffle = draw_local_shuffle(spatial_shape, rng) if rng.random() < p_local_shuffle else None
    nonlinear = draw_nonlinear(rng) if rng.random() < p_nonlinear else None
    paint = None
    if rng.random() < p_paint:
        paint = draw_paint(spatial_shape, rng, bool(rng.random() < p_outpaint_given_paint), 5, 0.95)
    return GenesisParams(shuffle, nonlinear, paint)


def apply_genesis(image: np.ndarray, params: GenesisParams) -> np.ndarray:
    """Apply the drawn steps in order: local shuffle, nonlinear curve, in/out-painting."""
    check_channels_first(image)
    out = image
    if params.shuffle is not None:
        out = apply_local_shuffle(out, params.shuffle)
    if params.nonlinear is not None:
        out = apply_nonlinear(out, params.nonlinear)
    if params.paint is not None:
        out = apply_paint(out, params.paint)
    return out.copy() if out is image else out


def genesis_corrupt(image: np.ndarray, rng: np.random.Generator, **probs: float) -> np.ndarray:
    """Draw and apply :func:`draw_genesis` (keyword probabilities as there)."""
    check_channels_first(image)
    return apply_genesis(image, draw_genesis(image.shape[1:], rng, **probs))
