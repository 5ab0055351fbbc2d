"""``sslunet_plan`` as a library call: verify, fingerprint, plan, preprocess."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from sslunet.dataset.raw import load_raw_dataset
from sslunet.dataset.verify import verify_dataset
from sslunet.errors import InputError
from sslunet.paths import check_writable_folder
from sslunet.planning.fingerprint import extract_fingerprint
from sslunet.planning.planner import get_preset, plan_experiment
from sslunet.planning.splits import make_splits
from sslunet.plans import Fingerprint, Plans
from sslunet.preprocessing.api import copy_ground_truth, preprocess_dataset
from sslunet.utils.atomic import read_json, write_json


@dataclass(frozen=True)
class PlanOptions:
    """What ``sslunet_plan`` plans. ``preset``: a planner preset of
    :data:`sslunet.planning.planner.PRESETS` (``plain``: nnU-Net's default planner and plain
    U-Net; ``resenc_m`` / ``resenc_l``: its residual-encoder presets); ``gpu_memory_gb`` None
    means the preset's budget (8 GB; 24 GB for ``resenc_l``)."""

    configurations: tuple[str, ...] = ("2d", "3d_fullres", "3d_lowres")
    gpu_memory_gb: float | None = None
    num_processes: int = 2
    overwrite: bool = False
    verify_only: bool = False
    preprocess: bool = True
    include_test: bool = False
    progress: bool = True
    base_features: int = 32
    max_features: int | None = None
    target_spacing: tuple[float, ...] | None = None  # plans' axis order; None: derived
    preset: str = "plain"

    def __post_init__(self) -> None:
        get_preset(self.preset)  # an unknown preset fails here, before any work


def _log(msg: str) -> None:
    print(msg, file=sys.stderr)


def describe_plans(plans: Plans) -> str:
    """A readable table of the planned configurations."""
    networks = "/".join(sorted({c.network for c in plans.configurations.values()}))
    lines = [f"{plans.plans_name} for {plans.dataset_name} (network {networks}, GPU memory "
             f"target {plans.gpu_memory_gb:g} GB, transpose {plans.transpose_forward}):"]
    for c in plans.configurations.values():
        strides = "x".join(str(c.total_downsampling[a]) for a in range(c.ndim))
        lines.append(
            f"  {c.name:<11} spacing {tuple(round(s, 3) for s in c.spacing)}  patch "
            f"{c.patch_size}  batch {c.batch_size}  stages {c.num_stages} (downsampling "
            f"{strides})  features {c.features_per_stage[0]}..{c.features_per_stage[-1]}  "
            f"median image {c.median_image_size}  norm {'/'.join(c.normalization_schemes)}")
    return "\n".join(lines)


def _resolve_plans(fp: Fingerprint, out: Path, opts: PlanOptions) -> Plans:
    """Reuse an existing plans.json (hand edits are respected) unless ``overwrite``."""
    fresh = plan_experiment(fp, opts.gpu_memory_gb, opts.configurations, opts.base_features,
                            opts.max_features, opts.target_spacing, opts.preset)
    path = out / "plans.json"
    if path.exists() and not opts.overwrite:
        existing = Plans.load(path)
        if existing.to_dict() != fresh.to_dict():
            _log(f"keeping existing {path} (it differs from a fresh plan; --overwrite re-plans)")
        return existing
    fresh.save(path)
    return fresh


def _write_splits(fp: Fingerprint, out: Path, overwrite: bool) -> None:
    path = out / "splits.json"
    labelled = [c.case_id for c in fp.cases if c.source == "imagesTr"]
    if path.exists() and not overwrite:
        try:  # users may hand-edit the folds; a broken file must not end in a traceback
            known = {i for s in read_json(path) for i in s["train"] + s["val"]}
        except (ValueError, TypeError, KeyError) as e:
            raise InputError(f"cannot be read as cross-validation splits ({e}); fix it or "
                             "re-run with --overwrite", path) from None
        if known == set(labelled):
            return
        _log(f"rewriting {path}: the labelled cases changed")
    write_json(path, make_splits(labelled))


def plan_and_preprocess(raw_dir: Path, preprocessed_root: Path,
                        opts: PlanOptions = PlanOptions()) -> Plans | None:
    """Verify and fingerprint the raw dataset, plan it, preprocess it.

    Writes ``PREPROCESSED/<dataset>/{fingerprint.json, plans.json, splits.json, dataset.json,
    gt_segmentations/, <data_identifier>/}``. Returns the plans (None with ``verify_only``).
    """
    raw_dir = Path(raw_dir).resolve()
    dataset = load_raw_dataset(raw_dir)
    out = Path(preprocessed_root).resolve() / dataset.name
    if out == raw_dir or raw_dir in out.parents:
        raise InputError("the preprocessed folder must not be inside the raw dataset", out)
    if not opts.verify_only:  # before the (long) checks and fingerprint, not after them
        check_writable_folder(out, "preprocessed folder")
    counts = {s: len(dataset.cases_from(s)) for s in ("imagesTr", "imagesUnlabeled", "imagesTs")}
    _log(f"{dataset.name}: {counts['imagesTr']} labelled, {counts['imagesUnlabeled']} "
         f"unlabeled, {counts['imagesTs']} test cases, {dataset.num_channels} channel(s)")
    if dataset.ignored_files:
        first = dataset.ignored_files[0]
        _log(f"warning: ignoring {len(dataset.ignored_files)} file(s) whose ending is not "
             f"dataset.json's file_ending {dataset.file_ending!r} (e.g. "
             f"{first.parent.name}/{first.name})")
    fp = extract_fingerprint(dataset, opts.num_processes, opts.progress)
    if opts.verify_only:
        if counts["imagesTs"]:
            verify_dataset(dataset, opts.num_processes, opts.progress, include_test=True)
        _log(f"{dataset.name}: all checks passed")
        return None
    out.mkdir(parents=True, exist_ok=True)
    fp.save(out / "fingerprint.json")
    write_json(out / "dataset.json", read_json(dataset.dataset_json_path))
    plans = _resolve_plans(fp, out, opts)
    _write_splits(fp, out, opts.overwrite)
    print(describe_plans(plans))
    if opts.preprocess:
        configs = tuple(c for c in opts.configurations if c in plans.configurations)
        n = preprocess_dataset(dataset, plans, out, configs, opts.num_processes, opts.overwrite,
                               opts.include_test, opts.progress)
        copy_ground_truth(dataset, out, opts.overwrite)
        sources = ("imagesTr", "imagesUnlabeled") + (("imagesTs",) if opts.include_test else ())
        total = len(dataset.cases_from(*sources))
        _log(f"preprocessed {n} case(s) ({total - n} already done) into {out}")
    return plans
