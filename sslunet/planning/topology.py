"""Network topology from spacing and patch size, and the feature-map-size memory proxy.

The rules follow nnU-Net v2's ``get_pool_and_conv_props`` and ``compute_conv_feature_map_size``
(summarised in the anchors note §2b); this is our own implementation of those rules. The proxy
depends on the network: one count per registered network (``FEATURE_MAP_COUNTS``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

FEATUREMAP_MIN_EDGE = 4  # no axis is pooled below this many voxels


@dataclass(frozen=True)
class Topology:
    pool_op_kernel_sizes: tuple[tuple[int, ...], ...]  # stage 0 is all ones
    conv_kernel_sizes: tuple[tuple[int, ...], ...]
    patch_size: tuple[int, ...]  # padded up to a multiple of ``divisible_by``
    divisible_by: tuple[int, ...]

    @property
    def num_stages(self) -> int:
        return len(self.pool_op_kernel_sizes)


def _poolable_axes(size: list[float], spacing: list[float], min_edge: int) -> list[int]:
    """Axes that may be pooled at this stage.

    Rule 1: an axis is only pooled while it is at least ``2 * min_edge`` voxels long, so the
    bottleneck keeps at least ``min_edge`` voxels. Rule 2: only axes whose current spacing is
    within a factor 2 of the finest current spacing are pooled; coarse (anisotropic) axes wait
    until the others have caught up, which makes the effective voxels roughly isotropic deep in
    the network. Rule 3: when a single axis qualifies it must be at least ``3 * min_edge`` long;
    pooling one axis alone is worth a stage only if it leaves a reasonably large map.
    """
    axes = [a for a in range(len(size)) if size[a] >= 2 * min_edge]
    if not axes:
        return []
    finest = min(spacing[a] for a in axes)
    axes = [a for a in axes if spacing[a] / finest < 2]
    if len(axes) == 1 and size[axes[0]] < 3 * min_edge:
        return []
    return axes


def plan_topology(spacing, patch_size, min_edge: int = FEATUREMAP_MIN_EDGE) -> Topology:
    """Derive strides and kernel sizes for every stage, then pad the patch to fit them.

    Kernel rule: an axis gets kernel 3 once its spacing is within a factor 2 of the finest
    spacing (before that, kernel 1: convolving across thick slices mixes unrelated anatomy);
    once 3 it stays 3. The bottleneck always uses kernel 3 on every axis.
    """
    ndim = len(spacing)
    cur_spacing = [float(s) for s in spacing]
    cur_size = [float(s) for s in patch_size]
    pools: list[tuple[int, ...]] = [(1,) * ndim]
    kernels: list[tuple[int, ...]] = []
    kernel = [1] * ndim
    n_pool = [0] * ndim
    while True:
        axes = _poolable_axes(cur_size, cur_spacing, min_edge)
        if not axes:
            break
        finest = min(cur_spacing)
        kernel = [3 if (k == 3 or cur_spacing[d] / finest < 2) else 1 for d, k in enumerate(kernel)]
        stride = [2 if d in axes else 1 for d in range(ndim)]
        for d in axes:
            n_pool[d] += 1
            cur_spacing[d] *= 2
            cur_size[d] = math.ceil(cur_size[d] / 2)
        pools.append(tuple(stride))
        kernels.append(tuple(kernel))
    kernels.append((3,) * ndim)
    divisible = tuple(2 ** n for n in n_pool)
    padded = tuple(int(math.ceil(p / d) * d) for p, d in zip(patch_size, divisible))
    return Topology(tuple(pools), tuple(kernels), padded, divisible)


def features_per_stage(num_stages: int, ndim: int, base: int = 32,
                       cap: int | None = None) -> tuple[int, ...]:
    """``min(base * 2**i, cap)``; default cap 320 in 3D and 512 in 2D, as nnU-Net."""
    cap = cap if cap is not None else (320 if ndim == 3 else 512)
    return tuple(min(base * 2 ** i, cap) for i in range(num_stages))


def conv_feature_map_size(topology: Topology, features: tuple[int, ...], num_classes: int,
                          n_conv_encoder: int | Sequence[int] = 2,
                          n_conv_decoder: int | Sequence[int] = 2) -> int:
    """Memory proxy of the plain U-Net: sum over conv outputs of channels x voxels (not bytes).

    Counts, for the plain U-Net with deep supervision: every encoder conv output, every decoder
    transposed-conv output and conv output, and every segmentation-head output. This is
    nnU-Net's ``compute_conv_feature_map_size`` and is compared against reference values
    calibrated for 8 GB of GPU memory. Conv counts are per stage, or one number for all.
    """
    sizes = _stage_sizes(topology)
    n_enc = _per_stage(n_conv_encoder, len(sizes))
    total = 0
    for s, size in enumerate(sizes):
        total += n_enc[s] * features[s] * math.prod(size)
    return int(total + _decoder_size(sizes, features, num_classes,
                                     _per_stage(n_conv_decoder, len(sizes) - 1)))


def resenc_feature_map_size(topology: Topology, features: tuple[int, ...], num_classes: int,
                            n_blocks: Sequence[int], n_conv_decoder: int | Sequence[int] = 1
                            ) -> int:
    """Memory proxy of the residual-encoder U-Net (``resenc_unet``), counted as for the plain
    one: channels x voxels of every conv output, with deep supervision.

    Encoder: the stem conv at full resolution; per residual block its two convs at the
    stage's (strided) resolution, plus the 1x1 projection of the skip in a block that changes
    the channel count (a stage's first block, unless the features are capped). Decoder: as the
    plain U-Net's. Pooling is not a conv and is not counted; nnU-Net's own
    ``BasicBlockD.compute_conv_feature_map_size`` also adds ``C x voxels`` for a skip that only
    pools (a block that strides at capped features), a few thousand activations in the deepest
    stages, negligible against the reference values.
    """
    sizes = _stage_sizes(topology)
    blocks = _per_stage(n_blocks, len(sizes))
    total = features[0] * math.prod(topology.patch_size)  # stem
    channels = features[0]
    for s, size in enumerate(sizes):
        vox = math.prod(size)
        total += 2 * blocks[s] * features[s] * vox  # conv1 and conv2 of every block
        if channels != features[s]:
            total += features[s] * vox  # the first block's 1x1 skip projection
        channels = features[s]
    return int(total + _decoder_size(sizes, features, num_classes,
                                     _per_stage(n_conv_decoder, len(sizes) - 1)))


# network registry name -> its memory proxy: (topology, features, num_classes, encoder convs or
# blocks per stage, decoder convs per stage) -> channels x voxels
FEATURE_MAP_COUNTS: dict[str, Callable[..., int]] = {
    "plain_unet": conv_feature_map_size,
    "resenc_unet": resenc_feature_map_size,
}


def feature_map_size(network: str, topology: Topology, features: tuple[int, ...],
                     num_classes: int, n_conv_encoder: Sequence[int],
                     n_conv_decoder: Sequence[int]) -> int:
    """The memory proxy of the network registered as ``network`` (see FEATURE_MAP_COUNTS)."""
    return FEATURE_MAP_COUNTS[network](topology, features, num_classes, n_conv_encoder,
                                       n_conv_decoder)


def _stage_sizes(topology: Topology) -> list[list[int]]:
    """Spatial size of every encoder stage's output, highest resolution first."""
    size, out = list(topology.patch_size), []
    for stride in topology.pool_op_kernel_sizes:
        size = [x // st for x, st in zip(size, stride)]
        out.append(size)
    return out


def _per_stage(n: int | Sequence[int], stages: int) -> tuple[int, ...]:
    return (n,) * stages if isinstance(n, int) else tuple(n)


def _decoder_size(stage_sizes: list[list[int]], features: tuple[int, ...], num_classes: int,
                  n_conv: tuple[int, ...]) -> int:
    """Decoder outputs, deepest first: per level the transposed conv, its convs and the
    deep-supervision head (``n_conv[s]`` belongs to the level at encoder resolution ``s``)."""
    total = 0
    for s in range(len(stage_sizes) - 2, -1, -1):
        vox = math.prod(stage_sizes[s])
        total += features[s] * vox  # transposed conv output
        total += n_conv[s] * features[s] * vox
        total += num_classes * vox  # deep-supervision head
    return total
