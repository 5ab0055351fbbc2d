"""Dataset fingerprint: spacings, shapes after cropping, intensity statistics.

Follows nnU-Net v2's fingerprint extractor in what it measures (see the anchors note §2a) with
two deliberate differences:

- unlabeled images (``imagesUnlabeled/``) are fingerprinted too: their spacings and shapes
  inform the plan (they are what pretraining trains on), and when a dataset has no labels at
  all the intensity statistics come from the nonzero voxels instead of the foreground;
- intensity statistics pool at most ``INTENSITY_SAMPLES_TOTAL`` = 1e6 sampled voxels per channel
  (nnU-Net: 1e8). Percentiles of a million samples are exact to well below what normalisation
  needs, and it keeps peak memory flat however large the dataset.

Each case is verified while it is read (:func:`sslunet.dataset.verify.check_case`), so a broken
dataset stops with a one-line error before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sslunet.dataset.labels import foreground_labels
from sslunet.dataset.raw import RawCase, RawDataset
from sslunet.dataset.verify import load_checked_case
from sslunet.plans import CaseFingerprint, ChannelIntensityStats, Fingerprint
from sslunet.preprocessing.cropping import nonzero_bbox
from sslunet.preprocessing.resampling import checked_new_shape
from sslunet.utils.parallel import parallel_map

INTENSITY_SAMPLES_TOTAL = 1_000_000
SAMPLING_SEED = 1234


@dataclass(frozen=True)
class _CaseResult:
    fingerprint: CaseFingerprint
    samples: list[np.ndarray]  # per channel
    samples_from_foreground: bool
    relative_size: float


def _analyse_case(args: tuple[RawCase, dict[str, int], int, int]) -> _CaseResult:
    case, labels, index, per_case = args
    data, seg, geometry = load_checked_case(case, labels)
    box = nonzero_bbox(data)
    slicer = tuple(slice(a, b) for a, b in box)
    cropped = data[(slice(None), *slicer)]
    rng = np.random.default_rng([SAMPLING_SEED, index])
    if seg is not None:
        # annotated foreground only: unannotated ("ignore") voxels are of unknown class
        where = np.isin(seg[slicer], list(foreground_labels(labels).values()))
        from_fg = bool(where.any())
    else:
        from_fg = False
    if not from_fg:
        where = np.any(cropped != 0, axis=0)
    flat = np.flatnonzero(where)
    picks = rng.choice(flat, size=min(per_case, flat.size), replace=False) if flat.size else flat
    samples = [np.asarray(ch.ravel()[picks], dtype=np.float32) for ch in cropped]
    shape_after = tuple(b - a for a, b in box)
    fp = CaseFingerprint(case.case_id, case.source, geometry.array_spacing,
                         tuple(int(s) for s in data.shape[1:]), shape_after)
    rel = float(np.prod(shape_after) / max(1, np.prod(data.shape[1:])))
    return _CaseResult(fp, samples, from_fg, rel)


def _channel_stats(values: np.ndarray, source: str) -> ChannelIntensityStats:
    if values.size == 0:
        values = np.zeros(1, dtype=np.float32)
    v = values.astype(np.float64)
    p005, p50, p995 = np.percentile(v, [0.5, 50.0, 99.5])
    return ChannelIntensityStats(float(v.mean()), float(p50), float(v.std()), float(v.min()),
                                 float(v.max()), float(p005), float(p995), source)


def _check_spacings_against_median(cases: list[RawCase], results: list[_CaseResult]) -> None:
    """Refuse a case that resampled to the dataset's median spacing (about the full-resolution
    target) would have an empty axis or an absurd size: its header spacing is wrong, and
    preprocessing would fail on it (checked here, before anything is written)."""
    median = tuple(float(v) for v in np.median([r.fingerprint.spacing for r in results], axis=0))
    for case, r in zip(cases, results):
        checked_new_shape(r.fingerprint.shape_before_crop, r.fingerprint.spacing, median,
                          f"case '{case.case_id}' against the dataset's median spacing",
                          case.images[0])


def extract_fingerprint(dataset: RawDataset, num_processes: int = 2,
                        progress: bool = True) -> Fingerprint:
    """Read and verify every labelled and unlabeled case and summarise the dataset."""
    cases = dataset.cases_from("imagesTr", "imagesUnlabeled")
    per_case = max(1, INTENSITY_SAMPLES_TOTAL // len(cases))
    jobs = [(c, dataset.labels, i, per_case) for i, c in enumerate(cases)]
    results: list[_CaseResult] = parallel_map(_analyse_case, jobs, num_processes,
                                              desc="fingerprint", progress=progress)
    _check_spacings_against_median(cases, results)
    labelled_fg = [r for r in results if r.samples_from_foreground]
    pool = labelled_fg if labelled_fg else results
    source = "foreground" if labelled_fg else "nonzero"
    stats = tuple(
        _channel_stats(np.concatenate([r.samples[ch] for r in pool]), source)
        for ch in range(dataset.num_channels)
    )
    return Fingerprint(
        dataset_name=dataset.name,
        num_channels=dataset.num_channels,
        channel_names=dataset.channel_names,
        labels=dataset.labels,
        cases=tuple(r.fingerprint for r in results),
        intensity_stats=stats,
        median_relative_size_after_cropping=float(np.median([r.relative_size for r in results])),
    )
