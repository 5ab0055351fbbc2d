"""The experiment planner: from a fingerprint and a memory budget to configuration plans.

Our implementation of nnU-Net v2's default ``ExperimentPlanner`` logic (anchors note §2b);
each rule is explained where it is applied. Constants below are nnU-Net v2's.

Presets (:data:`PRESETS`) choose the network and its memory calibration. ``plain`` (the
default) is nnU-Net's default planner and plain U-Net. ``resenc_m`` / ``resenc_l`` are its
residual-encoder presets (``nnUNetPlannerResEnc{M,L}``, anchors note §2b "ResEnc presets";
nnU-Net's ``documentation/resenc_presets.md``), our implementation of their rules:
``resenc_unet`` with ``1, 3, 4, 6, 6, ...`` residual blocks per encoder stage and one conv per
decoder stage; reference values 680e6 (3D) / 135e6 (2D) for 8 GB (M; nnU-Net recommends GPUs
with 9-11 GB) and 2.1e9 / 380e6 for 24 GB (L); the patch shrinks while ``estimate >
reference`` (the plain planner: while ``estimate / ref_bs * 2 > reference``); and, as in
nnU-Net's ResEnc planners (their code, not in the notes), the batch size is not capped at 5 %
of the dataset's voxels (``max_dataset_covered = 1``). The full-resolution and 2d data are
preprocessed exactly as for the plain preset, so they keep its data identifiers (nnU-Net does
the same); a 3d_lowres configuration gets the preset's own (its spacing depends on the
network's patch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sslunet.dataset.labels import num_classes
from sslunet.errors import SettingError
from sslunet.planning.topology import (
    feature_map_size,
    features_per_stage,
    plan_topology,
)
from sslunet.plans import ConfigurationPlan, Fingerprint, Plans, ResamplingPlan

ANISO_THRESHOLD = 3.0
REFERENCE_VALUE = {3: 560_000_000, 2: 85_000_000}  # feature-map proxy that fits in 8 GB ...
REFERENCE_BATCH = {3: 2, 2: 12}  # ... at this batch size
REFERENCE_GB = 8.0
MIN_BATCH = 2
MAX_DATASET_COVERED = 0.05
LOWRES_THRESHOLD = 0.25
LOWRES_SPACING_STEP = 1.03
PLANS_NAME = "sslunetPlans"
MASK_NORM_SCHEMES = {"zscore"}


@dataclass(frozen=True)
class Preset:
    """A network and the memory calibration the planner uses for it.

    ``reference_value[ndim]`` is the network's feature-map proxy that fits in ``reference_gb``
    of GPU memory at ``REFERENCE_BATCH[ndim]`` samples; ``reference_gb`` is also the default
    budget. ``fit_min_batch``: the patch shrinks until the minimum batch (2) fits (nnU-Net's
    default planner) rather than the reference batch (its ResEnc planners). Per-stage conv (or
    block) counts repeat their last entry for deeper stages.
    """

    name: str
    network: str
    plans_name: str
    reference_value: dict[int, int]
    reference_gb: float
    fit_min_batch: bool
    max_dataset_covered: float
    encoder_convs: tuple[int, ...]
    decoder_convs: int

    def convs(self, num_stages: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(encoder convs or blocks per stage, decoder convs per stage) for ``num_stages``."""
        enc = tuple(self.encoder_convs[min(i, len(self.encoder_convs) - 1)]
                    for i in range(num_stages))
        return enc, (self.decoder_convs,) * (num_stages - 1)


RESENC_BLOCKS = (1, 3, 4, 6)  # then 6 for every deeper stage
PRESETS = {
    "plain": Preset("plain", "plain_unet", PLANS_NAME, REFERENCE_VALUE, REFERENCE_GB,
                    fit_min_batch=True, max_dataset_covered=MAX_DATASET_COVERED,
                    encoder_convs=(2,), decoder_convs=2),
    "resenc_m": Preset("resenc_m", "resenc_unet", "sslunetResEncMPlans",
                       {3: 680_000_000, 2: 135_000_000}, 8.0, fit_min_batch=False,
                       max_dataset_covered=1.0, encoder_convs=RESENC_BLOCKS, decoder_convs=1),
    "resenc_l": Preset("resenc_l", "resenc_unet", "sslunetResEncLPlans",
                       {3: 2_100_000_000, 2: 380_000_000}, 24.0, fit_min_batch=False,
                       max_dataset_covered=1.0, encoder_convs=RESENC_BLOCKS, decoder_convs=1),
}



def get_preset(name: str) -> Preset:
    """The preset called ``name`` (a :class:`SettingError` naming the known ones)."""
    if name not in PRESETS:
        raise SettingError(f"unknown planner preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]

def normalization_scheme(channel_name: str) -> str:
    """nnU-Net's mapping: 'CT' -> ct, explicit scheme names kept, anything else z-score."""
    name = channel_name.strip().lower()
    return name if name in ("ct", "zscore", "nonorm", "rescale_to_0_1") else "zscore"


def fullres_target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """Median spacing, except for strongly anisotropic data.

    If the coarsest axis is more than 3x coarser than the others *and* has fewer than a third of
    their voxels, the median would throw away resolution the scanner actually delivered on many
    cases; nnU-Net then takes the 10th percentile of that axis (never finer than the other
    axes), so thin-slice cases are not downsampled too much.
    """
    target = np.percentile(spacings, 50, axis=0)
    median_shape = np.percentile(shapes, 50, axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(len(target)) if a != worst]
    aniso_spacing = target[worst] > ANISO_THRESHOLD * max(target[a] for a in others)
    aniso_voxels = median_shape[worst] * ANISO_THRESHOLD < min(median_shape[a] for a in others)
    if aniso_spacing and aniso_voxels:
        p10 = float(np.percentile(spacings[:, worst], 10))
        finest_allowed = max(target[a] for a in others)
        target[worst] = p10 if p10 >= finest_allowed else finest_allowed + 1e-5
    return target


def _estimate(topology, num_channels, num_classes, width=(32, None),
              preset: Preset = PRESETS["plain"]) -> int:
    feats = features_per_stage(topology.num_stages, len(topology.patch_size), *width)
    return feature_map_size(preset.network, topology, feats, num_classes,
                            *preset.convs(topology.num_stages))


def _too_large(est: float, reference: float, ref_bs: int, preset: Preset) -> bool:
    if preset.fit_min_batch:
        return est / ref_bs * MIN_BATCH > reference
    return est > reference


def _shrink_until_fits(spacing, patch, median_shape, reference, ref_bs, n_ch, n_cls, width,
                       preset: Preset = PRESETS["plain"]):
    """Reduce the patch until the memory proxy fits the budget at batch size 2 (the preset's
    rule: at the reference batch size for ResEnc).

    Each step shrinks the axis that is largest relative to the median image (keeping the patch's
    aspect close to the data's) by one divisibility unit, recomputed after a tentative step so
    that valid sizes such as 224 are not skipped (divisibility changes with the depth).
    """
    topo = plan_topology(spacing, patch)
    est = _estimate(topo, n_ch, n_cls, width, preset)
    while _too_large(est, reference, ref_bs, preset):
        ratios = [p / m for p, m in zip(topo.patch_size, median_shape)]
        axis = int(np.argmax(ratios))
        trial = list(topo.patch_size)
        trial[axis] -= topo.divisible_by[axis]
        step = plan_topology(spacing, trial).divisible_by[axis]
        new_patch = list(topo.patch_size)
        new_patch[axis] -= step
        if new_patch[axis] < 1:
            break
        topo = plan_topology(spacing, new_patch)
        est = _estimate(topo, n_ch, n_cls, width, preset)
    return topo, est


def plan_configuration(name: str, spacing, median_shape, n_voxels_dataset: float, n_ch: int,
                       n_cls: int, gpu_memory_gb: float, norm: tuple[str, ...],
                       mask_norm: tuple[bool, ...], data_identifier: str,
                       width: tuple[int, int | None] = (32, None),
                       preset: Preset = PRESETS["plain"]) -> ConfigurationPlan:
    """Patch size, topology and batch size for one configuration.

    ``width`` is (features of the first stage, cap): nnU-Net's (32, 320 in 3D / 512 in 2D) by
    default. Narrower networks (e.g. ``--base-features 16`` for CPU work) lower the memory
    proxy, so the same budget buys a larger patch or batch. ``preset`` chooses the network,
    its memory calibration and its conv (block) counts.
    """
    ndim = len(spacing)
    inv = 1.0 / np.asarray(spacing, dtype=np.float64)
    # Initial patch: aspect ratio of a physically isotropic cube, as large as 256^3 (2048^2 in
    # 2D) voxels, then clipped to the median image: a patch larger than the image is pointless.
    target_voxels = 256 ** 3 if ndim == 3 else 2048 ** 2
    initial = inv * (target_voxels / np.prod(inv)) ** (1 / ndim)
    initial = [min(int(round(i)), int(round(m))) for i, m in zip(initial, median_shape)]
    reference = preset.reference_value[ndim] * gpu_memory_gb / preset.reference_gb
    ref_bs = REFERENCE_BATCH[ndim]
    topo, est = _shrink_until_fits(spacing, initial, median_shape, reference, ref_bs, n_ch, n_cls,
                                   width, preset)
    # Spare memory goes into the batch size, but one batch may cover at most 5% of the dataset's
    # voxels (an overfitting precaution; ResEnc presets: 100%), and never fewer than 2 samples.
    batch = round(reference / est * ref_bs)
    cap = round(n_voxels_dataset * preset.max_dataset_covered / math.prod(topo.patch_size))
    batch = max(min(batch, cap), MIN_BATCH)
    stages = topo.num_stages
    n_conv_encoder, n_conv_decoder = preset.convs(stages)
    return ConfigurationPlan(
        name=name, data_identifier=data_identifier,
        spacing=tuple(float(s) for s in spacing), patch_size=topo.patch_size,
        median_image_size=tuple(int(round(m)) for m in median_shape), batch_size=int(batch),
        pool_op_kernel_sizes=topo.pool_op_kernel_sizes, conv_kernel_sizes=topo.conv_kernel_sizes,
        features_per_stage=features_per_stage(stages, ndim, *width),
        n_conv_per_stage_encoder=n_conv_encoder, n_conv_per_stage_decoder=n_conv_decoder,
        normalization_schemes=norm, use_mask_for_norm=mask_norm, batch_dice=False,
        resampling=ResamplingPlan(anisotropy_threshold=ANISO_THRESHOLD), network=preset.network,
        vram_estimate=float(est),
    )


def _median_shape_at(spacing, fp_spacings, fp_shapes) -> np.ndarray:
    new = [np.asarray(sh) * np.asarray(sp) / np.asarray(spacing) for sp, sh in
           zip(fp_spacings, fp_shapes)]
    return np.median(np.vstack(new), axis=0)


def _plan_lowres(full: ConfigurationPlan, median_shape, args,
                 preset: Preset = PRESETS["plain"]) -> ConfigurationPlan | None:
    """A coarser 3D configuration when the fullres patch sees < 25% of the median image.

    The spacing grows by 3% per step, the finest axes first (those more than 2x finer than the
    coarsest), until the patch covers at least 25% of the (resampled) median image. The lowres
    configuration is dropped when it would be less than 2x smaller than fullres.
    """
    full_spacing = np.asarray(full.spacing)
    spacing = full_spacing.copy()
    plan = full
    median_vox = float(np.prod(median_shape))
    while math.prod(plan.patch_size) / median_vox < LOWRES_THRESHOLD:
        coarsest = spacing.max()
        finer = coarsest / spacing > 2
        spacing = np.where(finer, spacing * LOWRES_SPACING_STEP, spacing) if finer.any() \
            else spacing * LOWRES_SPACING_STEP
        shape = full_spacing / spacing * np.asarray(median_shape)
        median_vox = float(np.prod(shape))
        plan = plan_configuration("3d_lowres", spacing, shape, *args[:6],
                                  data_identifier=f"{preset.plans_name}_3d_lowres",
                                  width=args[6], preset=preset)
    if float(np.prod(median_shape)) / median_vox < 2:
        return None
    return plan


def plan_experiment(fp: Fingerprint, gpu_memory_gb: float | None = None,
                    configurations: tuple[str, ...] = ("2d", "3d_fullres", "3d_lowres"),
                    base_features: int = 32, max_features: int | None = None,
                    target_spacing: tuple[float, ...] | None = None,
                    preset: str = "plain") -> Plans:
    """Derive the plans for ``fp`` (3d_lowres only where its rule triggers).

    ``preset`` is a key of :data:`PRESETS` (the network and its memory calibration);
    ``gpu_memory_gb`` None means the preset's budget (8 GB; 24 GB for ``resenc_l``).

    ``target_spacing`` (nnU-Net's ``overwrite_target_spacing``) replaces the derived full-
    resolution spacing, given in the plans' axis order (slice axis first, as printed); the
    transpose is still derived from the data. Coarser spacings give smaller images: the usual
    way to make a dataset fit a CPU or a small GPU.
    """
    chosen = get_preset(preset)
    if gpu_memory_gb is None:
        gpu_memory_gb = chosen.reference_gb
    labelled = [c for c in fp.cases if c.source == "imagesTr"] or list(fp.cases)
    spacings = np.array([c.spacing for c in fp.cases], dtype=np.float64)
    shapes = np.array([c.shape_after_crop for c in fp.cases], dtype=np.float64)
    fwd, t_spacing = _transpose_and_spacing(spacings, shapes, target_spacing)
    bwd = tuple(int(i) for i in np.argsort(fwd))
    median_shape = _median_shape_at(t_spacing, spacings[:, list(fwd)], shapes[:, list(fwd)])
    n_vox = float(np.prod(median_shape)) * len(labelled)
    norm, mask_norm = _normalization(fp)
    n_cls = num_classes(fp.labels)  # output channels: the ignore label gets none
    width = (base_features, max_features)
    args = (n_vox, fp.num_channels, n_cls, gpu_memory_gb, norm, mask_norm)
    configs: dict[str, ConfigurationPlan] = {}
    full = plan_configuration("3d_fullres", t_spacing, median_shape, *args,
                              data_identifier=f"{PLANS_NAME}_3d_fullres", width=width,
                              preset=chosen)
    lowres = (_plan_lowres(full, median_shape, (*args, width), chosen)
              if "3d_lowres" in configurations else None)
    if "2d" in configurations:
        configs["2d"] = plan_configuration("2d", t_spacing[1:], median_shape[1:], *args,
                                           data_identifier=f"{PLANS_NAME}_2d", width=width,
                                           preset=chosen)
        configs["2d"] = _with(configs["2d"], batch_dice=True)
    if "3d_fullres" in configurations:
        configs["3d_fullres"] = _with(full, batch_dice=lowres is not None)
    if lowres is not None:
        configs["3d_lowres"] = lowres
    return Plans(
        dataset_name=fp.dataset_name, plans_name=chosen.plans_name, gpu_memory_gb=gpu_memory_gb,
        num_input_channels=fp.num_channels, channel_names=fp.channel_names, labels=fp.labels,
        transpose_forward=fwd, transpose_backward=bwd,
        original_median_spacing=tuple(float(s) for s in np.median(spacings, axis=0)),
        original_median_shape=tuple(int(s) for s in np.median(shapes, axis=0)),
        intensity_stats=fp.intensity_stats, configurations=configs,
    )


def _transpose_and_spacing(spacings: np.ndarray, shapes: np.ndarray,
                           target_spacing: tuple[float, ...] | None
                           ) -> tuple[tuple[int, ...], np.ndarray]:
    """``(transpose_forward, full-resolution spacing in transposed order)``.

    The coarsest axis of the derived target spacing comes first (2D slices are then taken
    along it); a given ``target_spacing`` (already in that order) replaces the spacing only.
    """
    target = fullres_target_spacing(spacings, shapes)
    worst = int(np.argmax(target))
    fwd = tuple([worst] + [a for a in range(3) if a != worst])
    if target_spacing is not None:
        return fwd, np.asarray(target_spacing, dtype=np.float64)
    return fwd, target[list(fwd)]


def _normalization(fp: Fingerprint) -> tuple[tuple[str, ...], tuple[bool, ...]]:
    """Per channel: the normalisation scheme and whether it runs inside the nonzero mask.

    The mask only helps when cropping removed a lot of background (otherwise "nonzero" is the
    whole image) and only for schemes that leave 0 outside.
    """
    norm = tuple(normalization_scheme(fp.channel_names[str(c)]) for c in range(fp.num_channels))
    crop_helps = fp.median_relative_size_after_cropping < 0.75
    return norm, tuple(crop_helps and n in MASK_NORM_SCHEMES for n in norm)


def _with(plan: ConfigurationPlan, **changes) -> ConfigurationPlan:
    import dataclasses

    return dataclasses.replace(plan, **changes)
