"""Typed, versioned, JSON-serialisable fingerprint and plans.

Every later stage (preprocessing, training, pretraining, prediction) receives a :class:`Plans`
object explicitly; nothing reads plans through globals. Axis order everywhere is numpy's
(z, y, x) *after* ``transpose_forward``, i.e. the axis with the coarsest spacing first, as in
nnU-Net v2. Spacings are in millimetres.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from sslunet.dataset.labels import ignore_problem, ignore_value, num_classes
from sslunet.errors import InputError
from sslunet.utils.atomic import read_json, write_json
from sslunet.utils.serialization import from_dict, to_dict

FINGERPRINT_VERSION = 1
PLANS_VERSION = 1


@dataclass(frozen=True)
class ChannelIntensityStats:
    """Intensity statistics of one input channel, pooled over the sampled voxels of all cases.

    ``source`` says which voxels: ``"foreground"`` (label > 0 of labelled cases) or
    ``"nonzero"`` (inside the nonzero mask, used when a dataset has no labels).
    """

    mean: float
    median: float
    std: float
    min: float
    max: float
    percentile_00_5: float
    percentile_99_5: float
    source: str


@dataclass(frozen=True)
class CaseFingerprint:
    """What the planner needs to know about one case (numpy axis order, not transposed)."""

    case_id: str
    source: str  # "imagesTr", "imagesUnlabeled" or "imagesTs"
    spacing: tuple[float, ...]
    shape_before_crop: tuple[int, ...]
    shape_after_crop: tuple[int, ...]


@dataclass(frozen=True)
class Fingerprint:
    dataset_name: str
    num_channels: int
    channel_names: dict[str, str]
    labels: dict[str, int]
    cases: tuple[CaseFingerprint, ...]
    intensity_stats: tuple[ChannelIntensityStats, ...]
    median_relative_size_after_cropping: float
    schema_version: int = FINGERPRINT_VERSION

    @property
    def spacings(self) -> list[tuple[float, ...]]:
        return [c.spacing for c in self.cases]

    @property
    def shapes_after_crop(self) -> list[tuple[int, ...]]:
        return [c.shape_after_crop for c in self.cases]

    def save(self, path: str | Path) -> None:
        write_json(path, to_dict(self))

    @classmethod
    def load(cls, path: str | Path) -> "Fingerprint":
        return _load_versioned(cls, path, FINGERPRINT_VERSION)


@dataclass(frozen=True)
class ResamplingPlan:
    """How images and label maps are resampled to and from the target spacing.

    Orders are spline orders (0 nearest, 1 linear, 3 cubic). When a case is anisotropic
    (max spacing / min spacing > ``anisotropy_threshold``), the coarse axis is resampled
    separately with ``order_z_*`` (nnU-Net: 0, i.e. nearest) to avoid smearing across slices.
    Label maps are resampled one label at a time ("linear per label") when ``order_seg`` > 0.
    """

    order_data: int = 3
    order_seg: int = 1
    order_z_data: int = 0
    order_z_seg: int = 0
    anisotropy_threshold: float = 3.0


@dataclass(frozen=True)
class ConfigurationPlan:
    """One trainable configuration (``2d``, ``3d_fullres``, ``3d_lowres``).

    ``spacing``, ``patch_size`` and ``median_image_size`` have 2 entries for 2d (in-plane
    axes) and 3 for 3d. ``pool_op_kernel_sizes[i]`` is the stride of stage ``i`` (stage 0 has
    stride 1 everywhere); ``conv_kernel_sizes[i]`` its convolution kernel. ``network`` is the
    registry key of the network (``plain_unet``, or ``resenc_unet`` from the ResEnc planner
    presets, whose ``n_conv_per_stage_encoder`` counts residual blocks per stage).
    """

    name: str
    data_identifier: str
    spacing: tuple[float, ...]
    patch_size: tuple[int, ...]
    median_image_size: tuple[int, ...]
    batch_size: int
    pool_op_kernel_sizes: tuple[tuple[int, ...], ...]
    conv_kernel_sizes: tuple[tuple[int, ...], ...]
    features_per_stage: tuple[int, ...]
    n_conv_per_stage_encoder: tuple[int, ...]
    n_conv_per_stage_decoder: tuple[int, ...]
    normalization_schemes: tuple[str, ...]
    use_mask_for_norm: tuple[bool, ...]
    batch_dice: bool
    resampling: ResamplingPlan = field(default_factory=ResamplingPlan)
    network: str = "plain_unet"
    vram_estimate: float = 0.0

    @property
    def ndim(self) -> int:
        return len(self.patch_size)

    @property
    def num_stages(self) -> int:
        return len(self.features_per_stage)

    @property
    def total_downsampling(self) -> tuple[int, ...]:
        """Product of all strides per axis: every patch axis must be divisible by it."""
        out = [1] * self.ndim
        for stride in self.pool_op_kernel_sizes:
            out = [o * s for o, s in zip(out, stride)]
        return tuple(out)

    def problems(self, num_input_channels: int) -> list[str]:
        """What makes this configuration unusable (empty when it is consistent)."""
        n, nd = self.num_stages, self.ndim
        out = []
        if nd not in (2, 3):
            return [f"patch_size {self.patch_size} must have 2 (2d) or 3 (3d) entries"]
        for name in ("spacing", "median_image_size"):
            if len(getattr(self, name)) != nd:
                out.append(f"{name} {getattr(self, name)} must have {nd} entries like patch_size")
        if not all(_number(v) and v > 0 for v in self.spacing):
            out.append(f"spacing {self.spacing} must be > 0 on every axis")
        if not all(_int(v) and v >= 1 for v in self.patch_size):
            out.append(f"patch_size {self.patch_size} must be integers >= 1")
        if not _int(self.batch_size) or self.batch_size < 1:
            out.append(f"batch_size {self.batch_size!r} must be an integer >= 1")
        if n < 1 or not all(_int(v) and v >= 1 for v in self.features_per_stage):
            out.append(f"features_per_stage {self.features_per_stage} must have at least one "
                       "stage, each an integer >= 1")
        for name, want in (("pool_op_kernel_sizes", n), ("conv_kernel_sizes", n),
                           ("n_conv_per_stage_encoder", n), ("n_conv_per_stage_decoder", n - 1)):
            if len(getattr(self, name)) != want:
                out.append(f"{name} has {len(getattr(self, name))} entries but the "
                           f"{n} stage(s) of features_per_stage need {want}")
        for name in ("pool_op_kernel_sizes", "conv_kernel_sizes"):
            for i, k in enumerate(getattr(self, name)):
                if len(k) != nd or not all(_int(v) and v >= 1 for v in k):
                    out.append(f"{name}[{i}] {k} must be {nd} integers >= 1")
                elif name == "conv_kernel_sizes" and not all(v % 2 for v in k):
                    out.append(f"conv_kernel_sizes[{i}] {k} must be odd")
        for name in ("n_conv_per_stage_encoder", "n_conv_per_stage_decoder"):
            if not all(_int(v) and v >= 1 for v in getattr(self, name)):
                out.append(f"{name} {getattr(self, name)} must be integers >= 1")
        if not out:
            down = self.total_downsampling
            bad = [a for a in range(nd) if self.patch_size[a] % down[a]]
            if bad:
                out.append(f"patch_size {self.patch_size} is not divisible by the total "
                           f"downsampling {down} of pool_op_kernel_sizes (axis {bad[0]})")
        for name in ("normalization_schemes", "use_mask_for_norm"):
            if len(getattr(self, name)) != num_input_channels:
                out.append(f"{name} has {len(getattr(self, name))} entries for "
                           f"{num_input_channels} input channel(s)")
        r = self.resampling
        orders = (r.order_data, r.order_seg, r.order_z_data, r.order_z_seg)
        if not all(_int(v) and 0 <= v <= 5 for v in orders):
            out.append(f"resampling orders {orders} must be integers in 0..5")
        if not _number(r.anisotropy_threshold) or r.anisotropy_threshold <= 0:
            out.append(f"resampling.anisotropy_threshold {r.anisotropy_threshold} must be > 0")
        return out


@dataclass(frozen=True)
class Plans:
    """Everything later stages need to rebuild the preprocessing and the networks."""

    dataset_name: str
    plans_name: str
    gpu_memory_gb: float
    num_input_channels: int
    channel_names: dict[str, str]
    labels: dict[str, int]
    transpose_forward: tuple[int, ...]
    transpose_backward: tuple[int, ...]
    original_median_spacing: tuple[float, ...]
    original_median_shape: tuple[int, ...]
    intensity_stats: tuple[ChannelIntensityStats, ...]
    configurations: dict[str, ConfigurationPlan]
    schema_version: int = PLANS_VERSION

    @property
    def num_classes(self) -> int:
        """Number of output channels: background plus every foreground label (an ``"ignore"``
        label gets no channel)."""
        return num_classes(self.labels)

    @property
    def ignore_label(self) -> int | None:
        """Value of the ``"ignore"`` label (unannotated voxels), or None."""
        return ignore_value(self.labels)

    def configuration(self, name: str) -> ConfigurationPlan:
        if name not in self.configurations:
            raise InputError(
                f"configuration '{name}' is not planned for {self.dataset_name}; "
                f"available: {', '.join(self.configurations)}"
            )
        return self.configurations[name]

    def replace(self, **changes) -> "Plans":
        return dataclasses.replace(self, **changes)

    def problems(self) -> list[str]:
        """What makes these plans unusable (empty when they are consistent); checked whenever
        plans are read (``plans.json``, a checkpoint), so a hand edit that cannot work is
        refused before any run folder is made."""
        out = []
        if not _plain_name(self.dataset_name):
            out.append(f"dataset_name {self.dataset_name!r} must be a plain folder name")
        if not _int(self.num_input_channels) or self.num_input_channels < 1:
            return out + [f"num_input_channels {self.num_input_channels!r} must be an integer "
                          ">= 1"]
        for name in ("channel_names", "intensity_stats"):
            if len(getattr(self, name)) != self.num_input_channels:
                out.append(f"{name} has {len(getattr(self, name))} entries for "
                           f"{self.num_input_channels} input channel(s)")
        values = list(self.labels.values())
        if not values or not all(_int(v) and v >= 0 for v in values) or 0 not in values \
                or len(set(values)) != len(values):
            out.append(f"labels {self.labels} must map names to distinct integers >= 0 "
                       "including 0 (background)")
        elif ignore_problem(self.labels):
            out.append(ignore_problem(self.labels))
        dims = len(self.transpose_forward)
        if sorted(self.transpose_forward) != list(range(dims)) or dims not in (2, 3) or \
                [self.transpose_forward[a] for a in self.transpose_backward] != list(range(dims)):
            out.append(f"transpose_forward {self.transpose_forward} and transpose_backward "
                       f"{self.transpose_backward} must be inverse permutations of the axes")
        if not _number(self.gpu_memory_gb) or self.gpu_memory_gb <= 0:
            out.append(f"gpu_memory_gb {self.gpu_memory_gb!r} must be > 0")
        if not self.configurations:
            out.append("no configuration is planned")
        for key, config in self.configurations.items():
            if config.name != key:
                out.append(f"configuration '{key}' is named '{config.name}'")
            for what, name in (("name", key), ("data_identifier", config.data_identifier)):
                if not _plain_name(name):  # both become folder names
                    out.append(f"configuration {what} {name!r} must be a plain folder name")
            out += [f"configuration '{key}': {p}"
                    for p in config.problems(self.num_input_channels)]
        return out

    def check(self) -> "Plans":
        """``self`` if consistent; else a :class:`PlansError` with the first problem."""
        found = self.problems()
        if found:
            raise PlansError(found[0] + (f" (and {len(found) - 1} more problem(s))"
                                         if len(found) > 1 else ""))
        return self

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Plans":
        _check_version(data, PLANS_VERSION, "plans")
        return from_dict(cls, data).check()

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Plans":
        return _load_versioned(cls, path, PLANS_VERSION)


def _load_versioned(cls, path: str | Path, expected: int):
    """Read a JSON file written by ``save``; a broken (e.g. hand-edited) file is an InputError."""
    try:
        data = read_json(path)
    except (ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
        raise InputError(f"not valid JSON ({e})", path) from None
    if not isinstance(data, dict):
        raise InputError("must contain a JSON object", path)
    _check_version(data, expected, path)
    try:
        obj = from_dict(cls, data)
        return obj.check() if hasattr(obj, "check") else obj
    except PlansError as e:
        raise InputError(f"{e}; fix it or re-run sslunet_plan with --overwrite", path) from None
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise InputError(f"cannot be read as {cls.__name__} ({e}); fix it or re-run "
                         "sslunet_plan with --overwrite", path) from None


class PlansError(ValueError):
    """Plans that parse but cannot work (see :meth:`Plans.problems`)."""


def _plain_name(name) -> bool:
    """One folder name: not empty, not . or .., no path separator or NUL."""
    return isinstance(name, str) and name not in ("", ".", "..") and \
        not any(c in name for c in "/\\\0")


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_version(data: dict, expected: int, where) -> None:
    found = data.get("schema_version")
    if found != expected:
        raise InputError(
            f"schema_version {found} is not supported by this sslunet (expects {expected}); "
            "re-run sslunet_plan to regenerate it",
            where,
        )
