"""Planner rules (nnU-Net v2's default planner and its ResEnc presets, anchors note §2b) on
hand-built fingerprints.

No files are read: every test builds :class:`Fingerprint` objects directly (see
:mod:`tests.helpers.fingerprints`; fixture ``planned``), so each rule is checked in isolation
against a number worked out by hand or against the rule's formula.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from sslunet.errors import SettingError
from sslunet.planning.api import PlanOptions
from sslunet.planning.planner import (
    MAX_DATASET_COVERED,
    PRESETS,
    REFERENCE_BATCH,
    REFERENCE_GB,
    REFERENCE_VALUE,
    fullres_target_spacing,
    plan_experiment,
)
from sslunet.planning.topology import (
    conv_feature_map_size,
    plan_topology,
    resenc_feature_map_size,
)
from tests.helpers.fingerprints import SCENARIOS, cmr_like, make_fingerprint, uniform


def reference(ndim: int, gpu_gb: float = 8.0) -> float:
    return REFERENCE_VALUE[ndim] * gpu_gb / REFERENCE_GB


# --------------------------------------------------------------------------- target spacing


def _aniso_spacings(z_spacings):
    return np.array([(z, 1.0, 1.0) for z in z_spacings], dtype=np.float64)


def test_target_spacing_is_median_for_isotropic_data():
    spacings = np.array([(1.0, 0.8, 0.8), (1.2, 0.9, 0.9), (1.4, 1.0, 1.0)])
    shapes = np.array([(100, 120, 120)] * 3, dtype=np.float64)
    np.testing.assert_allclose(fullres_target_spacing(spacings, shapes), (1.2, 0.9, 0.9))


def test_target_spacing_uses_10th_percentile_when_both_anisotropy_conditions_hold():
    z = [3.0, 3.5, 4.0, 5.0, 5.0, 5.0, 5.0, 6.0, 6.0, 6.0]  # median 5 > 3 x 1
    shapes = np.array([(20, 256, 256)] * len(z), dtype=np.float64)  # 20 * 3 < 256
    target = fullres_target_spacing(_aniso_spacings(z), shapes)
    assert target[0] == pytest.approx(np.percentile(z, 10))
    assert target[0] < np.median(z)
    np.testing.assert_allclose(target[1:], (1.0, 1.0))
    # and through the planner: the 3d_fullres spacing is that value
    fp = make_fingerprint(_aniso_spacings(z).tolist(), shapes.astype(int).tolist())
    assert plan_experiment(fp).configurations["3d_fullres"].spacing[0] == pytest.approx(
        np.percentile(z, 10))


def test_target_spacing_10th_percentile_never_finer_than_in_plane():
    z = [0.5, 0.5, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0]  # p10 = 0.5 < in-plane 1.0
    shapes = np.array([(20, 256, 256)] * len(z), dtype=np.float64)
    target = fullres_target_spacing(_aniso_spacings(z), shapes)
    assert target[0] == pytest.approx(1.0 + 1e-5)


def test_target_spacing_keeps_median_when_only_spacing_is_anisotropic():
    z = [3.0, 3.5, 4.0, 5.0, 5.0, 5.0, 5.0, 6.0, 6.0, 6.0]
    shapes = np.array([(100, 256, 256)] * len(z), dtype=np.float64)  # 100 * 3 > 256
    assert fullres_target_spacing(_aniso_spacings(z), shapes)[0] == pytest.approx(np.median(z))


def test_target_spacing_keeps_median_when_only_voxels_are_anisotropic():
    z = [1.5, 2.0, 2.5, 2.5, 2.5, 2.5, 2.5, 2.6, 2.7, 2.8]  # median 2.5 < 3 x 1
    shapes = np.array([(20, 256, 256)] * len(z), dtype=np.float64)
    assert fullres_target_spacing(_aniso_spacings(z), shapes)[0] == pytest.approx(np.median(z))


# --------------------------------------------------------------------------- transpose


@pytest.mark.parametrize("spacing, shape, forward, backward", [
    ((1.0, 1.0, 5.0), (200, 200, 30), (2, 0, 1), (1, 2, 0)),
    ((1.0, 5.0, 1.0), (200, 30, 200), (1, 0, 2), (1, 0, 2)),
    ((5.0, 1.0, 1.0), (30, 200, 200), (0, 1, 2), (0, 1, 2)),
])
def test_transpose_puts_coarsest_axis_first(spacing, shape, forward, backward):
    plans = plan_experiment(uniform(spacing, shape, 6))
    assert plans.transpose_forward == forward
    assert plans.transpose_backward == backward
    assert tuple(np.argsort(forward)) == backward
    full = plans.configurations["3d_fullres"]
    assert full.spacing == pytest.approx((5.0, 1.0, 1.0))
    assert full.median_image_size == (30, 200, 200)
    assert plans.configurations["2d"].spacing == pytest.approx((1.0, 1.0))
    assert plans.configurations["2d"].median_image_size == (200, 200)


# --------------------------------------------------------------------------- topology


def test_isotropic_pools_all_axes_with_kernel_3(planned):
    _, plans = planned["isotropic"]
    for config in plans.configurations.values():
        nd = config.ndim
        assert config.pool_op_kernel_sizes[0] == (1,) * nd
        assert all(p == (2,) * nd for p in config.pool_op_kernel_sizes[1:])
        assert all(k == (3,) * nd for k in config.conv_kernel_sizes)
        assert len(config.conv_kernel_sizes) == config.num_stages


def test_tiny_images_few_stages_patch_clipped_and_padded(planned):
    _, plans = planned["tiny"]
    full = plans.configurations["3d_fullres"]
    assert full.patch_size == (6, 20, 20)  # clipped to the image, already divisible by 4
    assert full.num_stages == 3
    assert full.total_downsampling == (1, 4, 4)  # 6 slices are never pooled
    _, plans = planned["tiny_odd"]
    full = plans.configurations["3d_fullres"]
    # 22 is clipped to the image and padded up to the next multiple of 4
    assert full.patch_size == (6, 24, 24)
    assert plans.configurations["2d"].patch_size == (24, 24)


def test_one_slice_dataset(planned):
    _, plans = planned["one_slice"]
    two_d = plans.configurations["2d"]
    assert two_d.patch_size == (64, 64)
    assert two_d.spacing == pytest.approx((1.0, 1.0))
    full = plans.configurations.get("3d_fullres")
    if full is not None:  # a 3D plan of a 1-slice dataset must never pool or pad along z
        assert full.patch_size[0] == 1
        assert all(p[0] == 1 for p in full.pool_op_kernel_sizes)
    assert "3d_lowres" not in plans.configurations


def test_huge_images_shrink_until_memory_fits(planned):
    fp, plans = planned["huge"]
    for config in plans.configurations.values():
        ref, ref_bs = reference(config.ndim), REFERENCE_BATCH[config.ndim]
        assert config.vram_estimate / ref_bs * 2 <= ref
        assert config.batch_size >= 2
    full = plans.configurations["3d_fullres"]
    assert math.prod(full.patch_size) < math.prod((256, 256, 256))
    assert all(p < m for p, m in zip(full.patch_size, full.median_image_size))
    # one more divisibility step on any axis would no longer have been needed, i.e. the loop
    # stopped at the first patch that fits: growing the smallest axis breaks the budget
    grown = list(full.patch_size)
    axis = int(np.argmin(np.asarray(grown) / np.asarray(full.median_image_size)))
    grown[axis] += full.total_downsampling[axis]
    topo = plan_topology(full.spacing, grown)
    feats = tuple(min(32 * 2 ** i, 320) for i in range(topo.num_stages))
    assert conv_feature_map_size(topo, feats, len(fp.labels)) > reference(3)


@pytest.mark.parametrize("scenario", ["huge", "isotropic", "cmr_like"])
def test_larger_memory_budget_gives_larger_or_equal_patch_times_batch(scenario):
    fp = SCENARIOS[scenario]()
    # many cases, so that the 5% dataset cap does not mask the memory rule
    fp = dataclasses.replace(fp, cases=fp.cases * 100)
    previous = {}
    for gb in (2.0, 4.0, 8.0, 16.0, 40.0, 80.0):
        plans = plan_experiment(fp, gpu_memory_gb=gb)
        for name, c in plans.configurations.items():
            if name == "3d_lowres":
                continue  # its spacing (hence median image) changes with the budget
            voxels = math.prod(c.patch_size) * c.batch_size
            assert voxels >= previous.get(name, 0), (name, gb)
            previous[name] = voxels
    huge = plan_experiment(fp, gpu_memory_gb=80.0).configurations["2d"]
    assert huge.batch_size > plan_experiment(fp, gpu_memory_gb=8.0).configurations["2d"].batch_size


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_patch_divisible_by_total_downsampling(planned, scenario):
    _, plans = planned[scenario]
    for config in plans.configurations.values():
        assert len(config.patch_size) == len(config.total_downsampling) == len(config.spacing)
        for p, d in zip(config.patch_size, config.total_downsampling):
            assert p % d == 0, (config.name, config.patch_size, config.total_downsampling)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_batch_size_within_memory_and_dataset_caps(planned, scenario):
    fp, plans = planned[scenario]
    n_labelled = sum(c.source == "imagesTr" for c in fp.cases)
    full_median = plans.configurations["3d_fullres"].median_image_size
    n_vox = math.prod(full_median) * n_labelled
    for name, c in plans.configurations.items():
        if name == "3d_lowres":
            continue
        cap = round(n_vox * MAX_DATASET_COVERED / math.prod(c.patch_size))
        by_memory = round(reference(c.ndim) / c.vram_estimate * REFERENCE_BATCH[c.ndim])
        assert c.batch_size == max(min(by_memory, cap), 2), name


def test_batch_size_capped_at_5_percent_of_dataset():
    # 2d on CMR-like data: memory would allow ~49 slices per batch, 5% of the dataset is 21
    plans = plan_experiment(cmr_like())
    two_d = plans.configurations["2d"]
    n_vox = 12 * 256 * 256 * 35
    assert round(reference(2) / two_d.vram_estimate * 12) > 40
    assert two_d.batch_size == round(0.05 * n_vox / (256 * 256)) == 21
    # with 10x the cases the cap no longer binds: a larger batch
    fp = dataclasses.replace(cmr_like(), cases=cmr_like().cases * 10)
    assert plan_experiment(fp).configurations["2d"].batch_size > 21


def test_batch_size_never_below_two():
    plans = plan_experiment(uniform((1.0, 1.0, 1.0), (64, 64, 64), 1))
    full = plans.configurations["3d_fullres"]
    assert round(0.05 * 64 ** 3 / math.prod(full.patch_size)) == 0  # the 5% cap says 0 ...
    assert full.batch_size == 2  # ... the floor says 2


# --------------------------------------------------------------------------- 3d_lowres


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_lowres_only_when_fullres_patch_covers_less_than_25_percent(planned, scenario):
    _, plans = planned[scenario]
    full = plans.configurations["3d_fullres"]
    coverage = math.prod(full.patch_size) / math.prod(full.median_image_size)
    low = plans.configurations.get("3d_lowres")
    if coverage >= 0.25:
        assert low is None
        assert full.batch_dice is False
        return
    if low is not None:
        assert all(lo >= fu for lo, fu in zip(low.spacing, full.spacing))
        low_cov = math.prod(low.patch_size) / math.prod(low.median_image_size)
        assert low_cov >= 0.25 - 1e-3
        # dropped unless the lowres image is at least 2x smaller than fullres
        assert math.prod(full.median_image_size) / math.prod(low.median_image_size) >= 2 - 0.05
        assert full.batch_dice is True and low.batch_dice is False


def test_lowres_appears_for_huge_images(planned):
    _, plans = planned["huge"]
    assert "3d_lowres" in plans.configurations
    low = plans.configurations["3d_lowres"]
    assert low.spacing[0] > 2.0  # 500 -> about 200 slices
    assert not plan_experiment(SCENARIOS["huge"](),
                               configurations=("2d", "3d_fullres")).configurations.get("3d_lowres")


@pytest.mark.parametrize("scenario", ["isotropic", "cmr_like", "tiny", "x_anisotropic"])
def test_no_lowres_when_patch_covers_image(planned, scenario):
    assert "3d_lowres" not in planned[scenario][1].configurations


# --------------------------------------------------------------------------- features


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_features_double_per_stage_and_are_capped(planned, scenario):
    _, plans = planned[scenario]
    for c in plans.configurations.values():
        cap = 320 if c.ndim == 3 else 512
        assert c.features_per_stage == tuple(min(32 * 2 ** i, cap) for i in range(c.num_stages))
        assert len(c.n_conv_per_stage_encoder) == c.num_stages
        assert len(c.n_conv_per_stage_decoder) == c.num_stages - 1


def test_features_cap_is_reached(planned):
    _, plans = planned["huge"]
    assert plans.configurations["2d"].num_stages == 8
    assert max(plans.configurations["2d"].features_per_stage) == 512
    assert max(plans.configurations["3d_fullres"].features_per_stage) == 320


# --------------------------------------------------------------------------- CMR (nnU-Net)


def test_cmr_like_matches_nnunet_v2():
    plans = plan_experiment(cmr_like())
    full, two_d = plans.configurations["3d_fullres"], plans.configurations["2d"]
    assert plans.transpose_forward == (0, 1, 2)
    assert full.patch_size == (12, 256, 256)
    assert full.spacing == pytest.approx((7.99, 1.25, 1.25))
    assert two_d.patch_size == (256, 256)
    assert two_d.spacing == pytest.approx((1.25, 1.25))
    assert full.pool_op_kernel_sizes[1] == (1, 2, 2)  # 7.99 mm slices are not pooled at first
    assert full.conv_kernel_sizes[0] == (1, 3, 3)
    assert set(plans.configurations) == {"2d", "3d_fullres"}


# --------------------------------------------------------------------------- other rules


def test_unlabeled_cases_shape_the_plan_but_not_the_dataset_size():
    labelled = [(1.0, 1.0, 1.0)] * 4
    fp = make_fingerprint(labelled + [(1.0, 1.0, 1.0)] * 40, [(64, 64, 64)] * 44,
                          sources=["imagesTr"] * 4 + ["imagesUnlabeled"] * 40)
    two_d = plan_experiment(fp).configurations["2d"]
    # the 5% cap counts labelled cases only: 0.05 * 4 * 64^3 / 64^2 = 12.8
    assert two_d.batch_size == 13


@pytest.mark.parametrize("relative_size, expected", [(0.5, True), (0.9, False)])
def test_mask_for_norm_only_when_cropping_removed_much(relative_size, expected):
    plans = plan_experiment(uniform((1.0, 1.0, 1.0), (32, 32, 32), 4, n_channels=2,
                                    relative_size=relative_size))
    for c in plans.configurations.values():
        assert c.use_mask_for_norm == (expected, expected)
        assert c.normalization_schemes == ("zscore", "zscore")


def test_overridden_target_spacing_sets_spacing_and_shrinks_images():
    """--target-spacing (nnU-Net's overwrite_target_spacing): 2x coarser in-plane spacing halves
    the median in-plane image and the planned spacing is exactly the one asked for."""
    fp = cmr_like()
    default = plan_experiment(fp).configurations["2d"]
    coarse = plan_experiment(fp, target_spacing=(8.0, 2.5, 2.5))
    c2d, c3d = coarse.configurations["2d"], coarse.configurations["3d_fullres"]
    assert c2d.spacing == (2.5, 2.5) and c3d.spacing == (8.0, 2.5, 2.5)
    for got, full in zip(c2d.median_image_size, default.median_image_size):
        assert got == pytest.approx(full * default.spacing[0] / 2.5, abs=1)
    assert all(p <= q for p, q in zip(c2d.patch_size, default.patch_size))


# --------------------------------------------------------------------------- ResEnc presets


def preset_reference(preset: str, ndim: int, gpu_gb: float | None = None) -> float:
    p = PRESETS[preset]
    return p.reference_value[ndim] * (gpu_gb or p.reference_gb) / p.reference_gb


def resenc_blocks(n: int) -> tuple[int, ...]:
    return tuple((1, 3, 4, 6)[min(i, 3)] for i in range(n))


def test_default_preset_is_plain_and_unknown_presets_are_refused():
    fp = cmr_like()
    default = plan_experiment(fp)
    assert default == plan_experiment(fp, 8.0, preset="plain")
    assert default.plans_name == "sslunetPlans" and default.gpu_memory_gb == 8.0
    assert {c.network for c in default.configurations.values()} == {"plain_unet"}
    assert PlanOptions().preset == "plain" and PlanOptions().gpu_memory_gb is None
    with pytest.raises(SettingError, match="resenc_xl.*plain, resenc_m, resenc_l"):
        plan_experiment(fp, preset="resenc_xl")
    with pytest.raises(SettingError, match="unknown planner preset"):
        PlanOptions(preset="resenc")


@pytest.mark.parametrize("preset, plans_name, gb", [("resenc_m", "sslunetResEncMPlans", 8.0),
                                                    ("resenc_l", "sslunetResEncLPlans", 24.0)])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_resenc_presets_plan_the_residual_network(planned_resenc, scenario, preset, plans_name,
                                                  gb):
    _, plans = planned_resenc[scenario, preset]
    assert plans.plans_name == plans_name and plans.gpu_memory_gb == gb
    assert plans.problems() == []
    for name, c in plans.configurations.items():
        assert c.network == "resenc_unet"
        assert c.n_conv_per_stage_encoder == resenc_blocks(c.num_stages)  # 1, 3, 4, 6, 6, ...
        assert c.n_conv_per_stage_decoder == (1,) * (c.num_stages - 1)
        cap = 320 if c.ndim == 3 else 512
        assert c.features_per_stage == tuple(min(32 * 2 ** i, cap) for i in range(c.num_stages))
        # 2d and 3d_fullres data are the plain preset's; 3d_lowres spacing is the preset's own
        own = plans_name if name == "3d_lowres" else "sslunetPlans"
        assert c.data_identifier == f"{own}_{name}"


def test_resenc_shrinks_while_estimate_exceeds_reference(planned_resenc):
    """nnU-Net's ResEnc loop: shrink while ``estimate > reference`` (no ``/ref_bs*2``), and
    stop at the first patch that fits: one more divisibility step breaks the budget."""
    fp, plans = planned_resenc["huge", "resenc_m"]
    for c in plans.configurations.values():
        assert c.vram_estimate <= preset_reference("resenc_m", c.ndim)
    full = plans.configurations["3d_fullres"]
    assert math.prod(full.patch_size) < 256 ** 3
    grown = list(full.patch_size)
    axis = int(np.argmin(np.asarray(grown) / np.asarray(full.median_image_size)))
    grown[axis] += full.total_downsampling[axis]
    topo = plan_topology(full.spacing, grown)
    feats = tuple(min(32 * 2 ** i, 320) for i in range(topo.num_stages))
    assert resenc_feature_map_size(topo, feats, len(fp.labels), resenc_blocks(topo.num_stages),
                                   1) > preset_reference("resenc_m", 3)
    # in 2D the plain loop lets the patch cost up to 6x the reference (batch 2 of 12 fits);
    # ResEnc's does not
    two_d = plans.configurations["2d"]
    assert two_d.vram_estimate <= preset_reference("resenc_m", 2)
    assert two_d.batch_size >= REFERENCE_BATCH[2]


@pytest.mark.parametrize("preset, gb", [("resenc_m", None), ("resenc_l", None),
                                        ("resenc_m", 16.0)])
@pytest.mark.parametrize("scenario", ["huge", "isotropic", "cmr_like", "tiny", "mixed_spacing"])
def test_resenc_batch_size_uses_the_reference_and_no_5_percent_cap(scenario, preset, gb):
    fp = SCENARIOS[scenario]()
    plans = plan_experiment(fp, gb, preset=preset)
    assert plans.gpu_memory_gb == (gb or PRESETS[preset].reference_gb)
    n_vox = math.prod(plans.configurations["3d_fullres"].median_image_size) * len(fp.cases)
    for name, c in plans.configurations.items():
        if name == "3d_lowres":
            continue
        ref = preset_reference(preset, c.ndim, gb)
        assert c.vram_estimate <= ref
        by_memory = round(ref / c.vram_estimate * REFERENCE_BATCH[c.ndim])
        cap = round(n_vox * 1.0 / math.prod(c.patch_size))  # nnU-Net's max_dataset_covered = 1
        assert c.batch_size == max(min(by_memory, cap), 2), name


@pytest.mark.parametrize("scenario", ["huge", "isotropic", "cmr_like", "mixed_spacing"])
def test_resenc_presets_target_larger_budgets_than_plain(scenario):
    """M is calibrated for the plain preset's 8 GB but with a larger proxy reference (its network
    costs more per voxel); L for 24 GB. With enough cases that no dataset cap binds, the memory
    a batch is planned to use (``vram_estimate * batch_size``) grows plain < M < L."""
    fp = dataclasses.replace(SCENARIOS[scenario](), cases=SCENARIOS[scenario]().cases * 100)
    for ndim in (2, 3):
        assert PRESETS["plain"].reference_value[ndim] < PRESETS["resenc_m"].reference_value[ndim] \
            < PRESETS["resenc_l"].reference_value[ndim]
    used = {p: {n: c.vram_estimate * c.batch_size
                for n, c in plan_experiment(fp, preset=p).configurations.items()
                if n != "3d_lowres"}
            for p in ("plain", "resenc_m", "resenc_l")}
    for name in used["plain"]:
        assert used["plain"][name] < used["resenc_m"][name] < used["resenc_l"][name], name
