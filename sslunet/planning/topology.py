"""Network topology from spacing and patch size, and the feature-map-size memory proxy.

The rules follow nnU-Net v2's ``get_pool_and_conv_props`` and ``compute_conv_feature_map_size``
(summarised in the anchors note §2b); this is our own implementation of those rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
                          n_conv_encoder: int = 2, n_conv_decoder: int = 2) -> int:
    """Memory proxy: sum over conv outputs of channels x voxels (not bytes).

    Counts, for the plain U-Net with deep supervision: every encoder conv output, every decoder
    transposed-conv output and conv output, and every segmentation-head output. This is
    nnU-Net's ``compute_conv_feature_map_size`` and is compared against reference values
    calibrated for 8 GB of GPU memory.
    """
    size = list(topology.patch_size)
    stage_sizes = []
    total = 0
    for s, stride in enumerate(topology.pool_op_kernel_sizes):
        size = [x // st for x, st in zip(size, stride)]
        stage_sizes.append(size)
        total += n_conv_encoder * features[s] * math.prod(size)
    for s in range(len(stage_sizes) - 2, -1, -1):  # decoder, deepest first
        vox = math.prod(stage_sizes[s])
        total += features[s] * vox  # transposed conv output
        total += n_conv_decoder * features[s] * vox
        total += num_classes * vox  # deep-supervision head
    return int(total)
