"""Hand-built fingerprints for the planner tests: no files are read, each planning rule is
checked in isolation on a :class:`Fingerprint` built here."""

from __future__ import annotations

import numpy as np

from sslunet.plans import CaseFingerprint, ChannelIntensityStats, Fingerprint


def make_fingerprint(spacings, shapes, n_channels: int = 1, n_labels: int = 3,
                     relative_size: float = 0.9, sources=None) -> Fingerprint:
    """A fingerprint with one case per (spacing, shape), both numpy (z, y, x) order."""
    sources = sources or ["imagesTr"] * len(spacings)
    cases = tuple(
        CaseFingerprint(f"case_{i:03d}", src, tuple(float(s) for s in sp),
                        tuple(int(s) for s in sh), tuple(int(s) for s in sh))
        for i, (sp, sh, src) in enumerate(zip(spacings, shapes, sources)))
    stats = tuple(ChannelIntensityStats(100.0 + c, 95.0, 20.0, 0.0, 300.0, 40.0, 250.0,
                                        "foreground") for c in range(n_channels))
    return Fingerprint(
        dataset_name="Dataset001_Test", num_channels=n_channels,
        channel_names={str(c): "T2" for c in range(n_channels)},
        labels={"background": 0, **{f"l{i}": i for i in range(1, n_labels)}},
        cases=cases, intensity_stats=stats, median_relative_size_after_cropping=relative_size)


def uniform(spacing, shape, n: int, **kw) -> Fingerprint:
    return make_fingerprint([spacing] * n, [shape] * n, **kw)


def cmr_like() -> Fingerprint:
    """35 cine stacks at 7.99 x 1.25 x 1.25 mm with 10..18 slices (median 12), 256^2 in-plane."""
    slices = [10] * 4 + [11] + [12] * 14 + [13] * 2 + [14] * 10 + [15, 16, 17, 18]
    assert len(slices) == 35 and int(np.median(slices)) == 12
    return make_fingerprint([(7.99, 1.25, 1.25)] * 35, [(z, 256, 256) for z in slices])


# name -> fingerprint; every rule that must hold "for all configs" is checked on all of them
SCENARIOS = {
    "isotropic": lambda: uniform((1.0, 1.0, 1.0), (128, 128, 128), 10),
    "tiny": lambda: uniform((1.0, 1.0, 1.0), (6, 20, 20), 5),
    "tiny_odd": lambda: uniform((1.0, 1.0, 1.0), (6, 22, 22), 5),
    "one_slice": lambda: uniform((999.0, 1.0, 1.0), (1, 64, 64), 5),
    "huge": lambda: uniform((1.0, 1.0, 1.0), (500, 512, 512), 10),
    "x_anisotropic": lambda: uniform((1.0, 1.0, 5.0), (200, 200, 30), 10),
    "cmr_like": cmr_like,
    "mixed_spacing": lambda: make_fingerprint(
        [(3.0 + 0.5 * i, 0.7 + 0.02 * i, 0.7 + 0.02 * i) for i in range(12)],
        [(20 + i, 180 + 4 * i, 170 + 3 * i) for i in range(12)], n_channels=2),
}
