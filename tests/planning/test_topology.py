"""Tests for sslunet.planning.topology: pooling and kernels per axis, and the planner's memory
proxy (plain and residual-encoder U-Net) against the count measured on the real network
(:mod:`tests.helpers.feature_maps`).

No files are read: every test builds :class:`Fingerprint` objects directly (see
:mod:`tests.helpers.fingerprints`; fixture ``planned``), so each rule is checked in isolation
against a number worked out by hand or against the rule's formula.
"""

from __future__ import annotations

import numpy as np
import pytest

from sslunet.planning.topology import (
    Topology,
    conv_feature_map_size,
    feature_map_size,
    plan_topology,
    resenc_feature_map_size,
)


def test_anisotropic_topology_pools_fine_axes_first():
    topo = plan_topology((5.0, 1.0, 1.0), (32, 224, 224))
    # in-plane is pooled twice (1 -> 2 -> 4 mm) before z (5 mm) joins; z kernel 1 until then
    assert topo.pool_op_kernel_sizes[:4] == ((1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 2, 2))
    assert topo.conv_kernel_sizes[:3] == ((1, 3, 3), (1, 3, 3), (3, 3, 3))
    assert topo.conv_kernel_sizes[-1] == (3, 3, 3)


def test_no_axis_pooled_below_min_edge():
    for patch in [(6, 20, 20), (1, 64, 64), (12, 256, 256), (128, 128, 128)]:
        topo = plan_topology((1.0, 1.0, 1.0), patch)
        size = np.asarray(topo.patch_size, dtype=float)
        for stride in topo.pool_op_kernel_sizes[1:]:
            # an axis is only pooled while it is >= 8 voxels (bottleneck keeps >= 4)
            assert all(s >= 8 for s, st in zip(size, stride) if st == 2)
            size = np.ceil(size / np.asarray(stride))


@pytest.mark.parametrize("scenario", ["tiny", "x_anisotropic", "cmr_like", "mixed_spacing"])
def test_feature_map_size_matches_network_hooks(planned, scenario):
    torch = pytest.importorskip("torch")  # noqa: F841
    from tests.helpers.feature_maps import conv_feature_map_size as measured

    fp, plans = planned[scenario]
    n_cls = len(fp.labels)
    for c in plans.configurations.values():
        topo = Topology(c.pool_op_kernel_sizes, c.conv_kernel_sizes, c.patch_size,
                        c.total_downsampling)
        ours = conv_feature_map_size(topo, c.features_per_stage, n_cls)
        assert ours == measured(c, fp.num_channels, n_cls, deep_supervision=True), c.name
        assert c.vram_estimate == ours


def _topology(c) -> Topology:
    return Topology(c.pool_op_kernel_sizes, c.conv_kernel_sizes, c.patch_size,
                    c.total_downsampling)


@pytest.mark.parametrize("preset", ["resenc_m", "resenc_l"])
@pytest.mark.parametrize("scenario", ["tiny", "x_anisotropic", "cmr_like", "mixed_spacing"])
def test_resenc_feature_map_size_matches_network_hooks(planned_resenc, scenario, preset):
    """cmr_like's 3D plan has stages capped at 320 features that still stride: their first
    block's skip only pools (no conv, nothing counted)."""
    pytest.importorskip("torch")
    from tests.helpers.feature_maps import conv_feature_map_size as measured

    fp, plans = planned_resenc[scenario, preset]
    n_cls = len(fp.labels)
    for c in plans.configurations.values():
        assert c.network == "resenc_unet"
        ours = resenc_feature_map_size(_topology(c), c.features_per_stage, n_cls,
                                       c.n_conv_per_stage_encoder, c.n_conv_per_stage_decoder)
        assert ours == measured(c, fp.num_channels, n_cls, deep_supervision=True), c.name
        assert c.vram_estimate == ours
        assert feature_map_size(c.network, _topology(c), c.features_per_stage, n_cls,
                                c.n_conv_per_stage_encoder, c.n_conv_per_stage_decoder) == ours


def test_resenc_feature_map_size_known_answer():
    # 2D 8x8 patch, features (4, 8), one block per stage, stride 2, one decoder conv, 2 classes:
    # stem 4*64; stage 0 block conv1+conv2 2*4*64 (identity skip); stage 1 block 2*8*16 plus
    # its 1x1 skip projection 8*16; decoder transposed conv 4*64, conv 4*64, head 2*64
    topo = Topology(((1, 1), (2, 2)), ((3, 3), (3, 3)), (8, 8), (2, 2))
    assert resenc_feature_map_size(topo, (4, 8), 2, (1, 1), (1,)) == \
        256 + 512 + 256 + 128 + 256 + 256 + 128


def test_plain_count_is_selected_for_the_plain_network(planned):
    fp, plans = planned["cmr_like"]
    for c in plans.configurations.values():
        assert feature_map_size("plain_unet", _topology(c), c.features_per_stage, len(fp.labels),
                                c.n_conv_per_stage_encoder, c.n_conv_per_stage_decoder) == \
            conv_feature_map_size(_topology(c), c.features_per_stage, len(fp.labels)) == \
            c.vram_estimate
