"""Anatomy and image formation of one synthetic abdominal T2-weighted MR phantom.

This module holds everything that turns a random generator and a
:class:`~sslunet.dataset.synthetic.SynthConfig` into one case's arrays: the tissue model
(:class:`Tissue`, its mapping to labels), the implicit shapes of body, organs, spine and
vessels, the per-case tissue contrasts, and the rendering (texture, point-spread function,
bias field, Rician noise). Writing cases as a dataset lives in :mod:`sslunet.dataset.synthetic`,
which re-exports the public names here.

Each case is drawn in a millimetre coordinate system centred on the body (x: patient left,
y: posterior, z: superior, i.e. LPS; z = 0 at the liver dome), so organ sizes stay anatomical
whatever the sampled spacing. Shapes are implicit functions (deformed ellipsoids, cylinders)
evaluated with broadcasting inside each structure's bounding box; smooth random fields are
separable Gaussian-kernel interpolations of coarse white noise. The noise-free image is a
lookup of per-case tissue contrasts, blurred by a small point-spread function, multiplied by
a smooth bias field and corrupted by Rician noise (magnitude of complex Gaussian noise).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np
from scipy.ndimage import gaussian_filter

from sslunet.dataset.phantom_geometry import (
    Blob, Grid, random_blob, rotation, segment_distance, smooth_fields, smooth_min,
)

if TYPE_CHECKING:  # annotations only: synthetic.py imports this module, not the reverse
    from sslunet.dataset.synthetic import SynthConfig

LABELS = {"background": 0, "liver": 1, "spleen": 2, "kidney": 3}

# tissue classes painted into the phantom: many more than the labels, for realism
Tissue = IntEnum("Tissue", [
    "AIR", "SUBCUT_FAT", "MUSCLE", "VISCERAL_FAT", "BOWEL_WALL", "BOWEL_CONTENT", "FLUID",
    "STOMACH_WALL", "STOMACH_CONTENT", "LUNG", "HEART", "MARROW", "CORTICAL_BONE", "DISC", "CSF",
    "VESSEL", "LIVER", "LIVER_VESSEL", "LIVER_CYST", "SPLEEN", "KIDNEY_CORTEX", "KIDNEY_MEDULLA",
    "GALLBLADDER"], start=0)

TISSUE_TO_LABEL = np.zeros(len(Tissue), np.uint8)
TISSUE_TO_LABEL[[Tissue.LIVER, Tissue.LIVER_VESSEL, Tissue.LIVER_CYST]] = LABELS["liver"]
TISSUE_TO_LABEL[Tissue.SPLEEN] = LABELS["spleen"]
TISSUE_TO_LABEL[[Tissue.KIDNEY_CORTEX, Tissue.KIDNEY_MEDULLA]] = LABELS["kidney"]


@dataclass(frozen=True)
class SynthCase:
    """One phantom before it becomes SimpleITK images; arrays are (z, y, x)."""

    image: np.ndarray  # float32
    label: np.ndarray  # uint8, values in LABELS
    tissue: np.ndarray  # uint8, values in Tissue (for tests and inspection)
    spacing: tuple[float, float, float]  # (x, y, z) mm, SimpleITK order
    origin: tuple[float, float, float]
    direction: tuple[float, ...]  # 9 values, row-major


def _paint(tissue, value, mask, allowed=None, sl=(slice(None),) * 3) -> None:
    """Set ``tissue[sl]`` to ``value`` where ``mask`` (broadcastable) and ``allowed[sl]``."""
    where = mask if allowed is None else mask & allowed[sl]
    np.copyto(tissue[sl], np.uint8(value), where=where)


# ---------------------------------------------------------------------------------- anatomy
def _sample_grid(rng, cfg: SynthConfig) -> tuple[Grid, float, float]:
    """Spacing, size, field of view and body placement; returns (grid, body semi-axes a, b)."""
    sxy, sz = rng.uniform(*cfg.inplane_spacing_mm), rng.uniform(*cfg.slice_spacing_mm)
    a = rng.uniform(135, 180)
    b = a * rng.uniform(0.62, 0.8)
    lo, hi = cfg.inplane_size
    nx = int(np.clip(round(2 * a * rng.uniform(1.05, 1.35) / sxy), lo, hi))
    ny = int(np.clip(round(2 * b * rng.uniform(1.15, 1.5) / sxy), lo, hi))
    zlo, zhi = cfg.num_slices
    nz = int(rng.integers(min(max(zlo, int(np.ceil(cfg.min_craniocaudal_mm / sz))), zhi), zhi + 1))
    cx = (nx - 1) * sxy / 2 + rng.uniform(-0.06, 0.06) * nx * sxy
    cy = (ny - 1) * sxy / 2 + rng.uniform(-0.06, 0.06) * ny * sxy
    top = rng.uniform(-10, 25)  # image top above the liver dome (negative: dome cut off)
    f32 = np.float32
    grid = Grid((np.arange(nx) * sxy - cx).astype(f32), (np.arange(ny) * sxy - cy).astype(f32),
                 (np.arange(nz) * sz - (nz - 1) * sz + top).astype(f32), (sxy, sxy, sz))
    return grid, a, b


def _paint_body(rng, grid: Grid, tissue, a: float, b: float):
    """Body outline, subcutaneous fat, abdominal wall, lungs and heart above the diaphragm,
    bowel and visceral fat below it. Returns boolean masks (under_fat, inner, abdomen)."""
    x, y = grid.x[None, :] / a, grid.y[:, None] / b  # (1, nx), (ny, 1)
    p = rng.uniform(2.2, 3.0)  # flatter back: superellipse posteriorly
    r = np.where(y > 0, (np.abs(x) ** p + np.abs(y) ** p) ** (1 / p), np.hypot(x, y))
    theta = np.arctan2(y, x)  # (ny, nx)
    k = np.arange(2, 5)[:, None, None]
    r = r * (1 + (rng.uniform(0, 0.03, (3, 1, 1))
                  * np.cos(k * theta + rng.uniform(0, 2 * np.pi, (3, 1, 1)))).sum(0))
    # r is 1-homogeneous in (x, y), so the centre-to-surface distance along a ray is |p| / r
    radius = np.where(r > 1e-6, np.hypot(x * a, y * b) / np.maximum(r, 1e-6), a)
    z = grid.z
    s = (1 + 0.03 * np.sin(z / rng.uniform(50, 100) + rng.uniform(0, 2 * np.pi))
         - rng.uniform(0, 0.1) * z / 200)  # abdomen slightly wider caudally
    depth = (radius * (s[:, None, None] - r)).astype(np.float32)  # (nz, ny, nx) mm
    t_fat = rng.uniform(8, 30) * (1 + 0.35 * np.cos(theta - rng.uniform(0, 2 * np.pi)))
    t_wall = t_fat + rng.uniform(7, 13) * (1 + 0.3 * np.cos(2 * theta + rng.uniform(0, 6.3)))
    _paint(tissue, Tissue.SUBCUT_FAT, depth > 0)
    under_fat = depth > t_fat
    _paint(tissue, Tissue.MUSCLE, under_fat)
    inner = depth > t_wall
    # diaphragm: two domes (right higher), paraboloids of curvature radius ~110 mm
    rho = rng.uniform(90, 130)
    xx, yy = grid.x[None, :], grid.y[:, None]  # (1, nx), (ny, 1) mm
    dome_r = rng.uniform(2, 8) - ((xx + 0.35 * a) ** 2 + yy ** 2) / (2 * rho)
    dome_l = -rng.uniform(5, 20) - ((xx - 0.4 * a) ** 2 + (yy - 0.1 * b) ** 2) / (2 * rho)
    above = z[:, None, None] > np.maximum(dome_r, dome_l)  # (nz, ny, nx)
    _paint(tissue, Tissue.LUNG, inner & above)
    heart = random_blob(rng, (rng.uniform(0, 30), -0.3 * b, rng.uniform(35, 60)),
                  (rng.uniform(55, 70), rng.uniform(40, 0.45 * b + 10), rng.uniform(50, 60)))
    sl, *xyz = grid.box(*heart.bounds())
    _paint(tissue, Tissue.HEART, heart.level(*xyz) < 0, inner & above, sl)
    abdomen = inner & ~above
    # bowel loops: walls along the zero set of one field, lumen fluid or chyme by a second,
    # mesenteric fat where a third is high
    f = smooth_fields(rng, grid, 15.0, 3)
    thr = NormalDist().inv_cdf(1 - rng.uniform(0.25, 0.55))  # visceral fat fraction
    lumen = np.where(f[1] > 0.6, Tissue.FLUID, Tissue.BOWEL_CONTENT)
    bowel = np.where(np.abs(f[0]) < 0.3, Tissue.BOWEL_WALL, lumen)
    bowel = np.where(f[2] > thr, Tissue.VISCERAL_FAT, bowel).astype(np.uint8)
    np.copyto(tissue, bowel, where=abdomen)
    return under_fat, inner, abdomen


def _paint_liver(rng, grid: Grid, tissue, abdomen, a, b, ivc) -> Blob:
    """Right lobe (tapered deformed ellipsoid) smoothly joined to a flat left lobe crossing
    the midline anteriorly; dark hepatic veins draining into the IVC; 0-2 bright cysts."""
    c = rng.uniform(60, 75)  # craniocaudal semi-axis
    right = random_blob(rng, (-0.42 * a + rng.uniform(-8, 8), -0.05 * b + rng.uniform(-8, 8), -0.8 * c),
                  (rng.uniform(65, 85), min(rng.uniform(65, 85), 0.75 * b), c),
                  rotation(rng.uniform(-10, 10)), taper=rng.uniform(0.15, 0.35))
    left = random_blob(rng, (rng.uniform(-10, 15), -0.42 * b, -0.55 * c),
                 (rng.uniform(40, 55), rng.uniform(0.2, 0.28) * b, 0.5 * c),
                 rotation(rng.uniform(-15, 15)), taper=rng.uniform(0.0, 0.3))
    (lo1, hi1), (lo2, hi2) = right.bounds(), left.bounds()
    sl, x, y, z = grid.box(np.minimum(lo1, lo2), np.maximum(hi1, hi2))
    level = smooth_min(right.level(x, y, z), left.level(x, y, z), 0.3)
    _paint(tissue, Tissue.LIVER, level < 0, abdomen, sl)
    in_liver = tissue[sl] == Tissue.LIVER
    p0 = np.array([ivc[0], ivc[1], -rng.uniform(10, 25)])
    for direction in ((-1, -0.3, -0.25), (-0.3, -1, -0.3), (0.6, -1, -0.2)):
        d = np.asarray(direction) + rng.uniform(-0.2, 0.2, 3)
        p1 = p0 + d / np.linalg.norm(d) * rng.uniform(60, 100)
        _paint(tissue[sl], Tissue.LIVER_VESSEL, segment_distance(x, y, z, p0, p1)
               < rng.uniform(2, 3.5), in_liver)
    for _ in range(int(rng.integers(0, 3))):
        centre = (right.center + rng.uniform(-0.5, 0.5, 3) * right.semi).tolist()
        dist = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2)
        _paint(tissue[sl], Tissue.LIVER_CYST, dist < rng.uniform(4, 12), in_liver)
    return right


def _paint_organs(rng, grid: Grid, tissue, abdomen, a, b, yv, ivc) -> None:
    """Stomach, kidneys and spleen, then the liver over them, then the gallbladder."""
    c = -rng.uniform(25, 50)  # height of the stomach / spleen centre
    if rng.random() < 0.9:
        stomach = random_blob(rng, (0.35 * a + rng.uniform(-10, 10), -0.25 * b + rng.uniform(-10, 10),
                              c),
                        rng.uniform((40, 28, 45), (55, 40, 60)), rotation(rng.uniform(-30, 30)))
        sl, *xyz = grid.box(*stomach.bounds())
        lev = stomach.level(*xyz)
        _paint(tissue, Tissue.STOMACH_WALL, lev < 0, abdomen, sl)
        _paint(tissue, Tissue.STOMACH_CONTENT, lev < -rng.uniform(0.12, 0.2), abdomen, sl)
    z_kidney = -rng.uniform(100, 130)
    for m in (-1, 1):  # patient right, left
        psi = rng.uniform(20, 40)  # hilum faces antero-medially, upper pole tilts medially
        kidney = random_blob(rng, (m * rng.uniform(55, 75), yv + rng.uniform(-5, 15),
                             z_kidney + (m > 0) * rng.uniform(5, 20)),
                       rng.uniform((24, 20, 50), (30, 25, 60)),
                       rotation(psi if m > 0 else 180 - psi, -rng.uniform(10, 20)),
                       bend=rng.uniform(0.1, 0.25))
        sl, *xyz = grid.box(*kidney.bounds())
        lev = kidney.level(*xyz)
        _paint(tissue, Tissue.KIDNEY_CORTEX, lev < 0, abdomen, sl)
        _paint(tissue, Tissue.KIDNEY_MEDULLA, lev < -rng.uniform(0.25, 0.35), abdomen, sl)
    sx, sy = rng.uniform(0.5, 0.62) * a, rng.uniform(0.2, 0.4) * b
    phi = np.arctan2(sy / b, sx / a)
    axes = np.array([[np.cos(phi), 0, -np.sin(phi)], [np.sin(phi), 0, np.cos(phi)], [0, 1, 0]])
    spleen = random_blob(rng, (sx, sy, c + rng.uniform(-10, 10)),
                   rng.uniform((18, 45, 45), (26, 60, 60)), axes, bend=rng.uniform(0.15, 0.3))
    sl, *xyz = grid.box(*spleen.bounds())
    _paint(tissue, Tissue.SPLEEN, spleen.level(*xyz) < 0, abdomen, sl)
    right = _paint_liver(rng, grid, tissue, abdomen, a, b, ivc)
    if rng.random() < 0.75:
        gb = random_blob(rng, (-0.15 * a + rng.uniform(-15, 15), -0.35 * b,
                         right.center[2] - rng.uniform(0.3, 0.6) * right.semi[2]),
                   rng.uniform((12, 12, 28), (18, 18, 40)), rotation(0, 0, rng.uniform(30, 50)))
        sl, *xyz = grid.box(*gb.bounds())
        _paint(tissue, Tissue.GALLBLADDER, gb.level(*xyz) < 0, abdomen, sl)


def _paint_spine_vessels(rng, grid: Grid, tissue, under_fat, inner, abdomen, yv, ivc) -> None:
    """Psoas and paraspinal muscles, vertebral body with discs and posterior arch, aorta, IVC
    (all but the psoas are cylinders along z, so their masks are 2-D and broadcast)."""
    x, y, z = grid.x[None, None, :], grid.y[None, :, None], grid.z[:, None, None]
    ax, ay = rng.uniform(20, 25), rng.uniform(16, 20)
    z_top, rp = -rng.uniform(90, 120), rng.uniform(15, 25)
    for m in (-1, 1):
        r = rp * np.clip((z_top - z) / 70, 0, 1) ** 0.7
        _paint(tissue, Tissue.MUSCLE, np.hypot(x - m * (ax + rp * 0.8), y - yv) < r, abdomen)
        ex, ey = rng.uniform(22, 30), rng.uniform(20, 28)
        para = ((x - m * (ex + rng.uniform(2, 8))) / ex) ** 2 + ((y - yv - ay - ey) / ey) ** 2
        _paint(tissue, Tissue.MUSCLE, para < 1, under_fat)
    vb = np.hypot(x / ax, (y - yv) / ay)
    _paint(tissue, Tissue.CORTICAL_BONE, vb < 1, under_fat)
    _paint(tissue, Tissue.MARROW, vb < 0.85, under_fat)
    period = rng.uniform(32, 38)
    disc = (z - rng.uniform(0, period)) % period < rng.uniform(6, 9)
    _paint(tissue, Tissue.DISC, (vb < 0.85) & disc, under_fat)
    rc = rng.uniform(7, 9)
    yc = yv + ay + rc + 3
    _paint(tissue, Tissue.CORTICAL_BONE, np.hypot(x, y - yc) < rc + 5, under_fat)
    _paint(tissue, Tissue.MARROW, (np.abs(x) < 5) & (np.abs(y - yc - 20) < 14), under_fat)
    _paint(tissue, Tissue.CSF, np.hypot(x, y - yc) < rc, under_fat)
    r_aorta = rng.uniform(9, 12)
    _paint(tissue, Tissue.VESSEL, np.hypot(x - rng.uniform(8, 18), y - (yv - ay - r_aorta - 3))
           < r_aorta, inner)
    _paint(tissue, Tissue.VESSEL, np.hypot((x - ivc[0]) / ivc[2], (y - ivc[1]) / ivc[3]) < 1,
           inner)


# --------------------------------------------------------------------------------- rendering
def _contrast(rng) -> np.ndarray:
    """T2-weighted signal of each tissue relative to subcutaneous fat, sampled per case:
    fluid > fat > spleen, kidney > liver > muscle > flow voids, air ~ 0."""
    u = rng.uniform
    fat, liver, cortex = u(0.9, 1.0), u(0.22, 0.36), u(0.45, 0.6)
    values = dict(
        SUBCUT_FAT=fat, MUSCLE=u(0.12, 0.2), VISCERAL_FAT=fat * u(0.85, 0.98),
        BOWEL_WALL=u(0.25, 0.4), BOWEL_CONTENT=u(0.15, 0.6), FLUID=u(1.1, 1.4),
        STOMACH_WALL=u(0.25, 0.35), STOMACH_CONTENT=u(0.9, 1.3) if u() < 0.6 else u(0.35, 0.6),
        LUNG=u(0.02, 0.05), HEART=u(0.12, 0.25), MARROW=u(0.35, 0.55), CORTICAL_BONE=u(0.05, 0.1),
        DISC=u(0.6, 0.9), CSF=u(1.2, 1.5), VESSEL=u(0.03, 0.08), LIVER=liver,
        LIVER_VESSEL=liver * u(0.4, 0.7), LIVER_CYST=u(1.2, 1.5), SPLEEN=liver + u(0.15, 0.3),
        KIDNEY_CORTEX=cortex, KIDNEY_MEDULLA=cortex + u(0.08, 0.2), GALLBLADDER=u(1.2, 1.5),
    )
    table = np.zeros(len(Tissue), np.float32)
    for name, value in values.items():
        table[Tissue[name]] = value
    return table


def _render(rng, tissue, grid: Grid, cfg: SynthConfig) -> np.ndarray:
    """Contrast lookup with mild texture, PSF blur, bias field, global scale, Rician noise.

    The noise model is that of magnitude MR images (Gudbjartsson & Patz, "The Rician
    distribution of noisy MRI data", MRM 1995): |signal + n1 + i n2| with n1, n2 ~ N(0, sigma^2).
    """
    image = _contrast(rng)[tissue] * (1 + 0.05 * smooth_fields(rng, grid, 10.0, 1)[0])
    image = gaussian_filter(image, sigma=(0.35, 0.5, 0.5), truncate=2.5)
    bias = smooth_fields(rng, grid, 250.0, 1)[0]  # (z, y, x)
    bias = np.exp(rng.uniform(*cfg.bias_amplitude) * bias / np.abs(bias).max())
    scale = rng.uniform(*cfg.intensity_scale)
    sigma = np.float32(rng.uniform(*cfg.noise_sigma) * scale)
    signal = image * bias * np.float32(scale)
    n1, n2 = rng.standard_normal((2,) + tissue.shape, dtype=np.float32) * sigma
    return np.sqrt((signal + n1) ** 2 + n2 ** 2).astype(np.float32)


def draw_phantom(rng: np.random.Generator, config: SynthConfig) -> SynthCase:
    """Draw one phantom; every random choice comes from ``rng``.

    Args:
        rng: the case's generator (``generate_dataset`` uses ``default_rng([seed, index])``).
        config: ranges for spacing, size, noise, bias and orientation.

    Returns:
        SynthCase with (z, y, x) arrays and SimpleITK-ordered geometry.
    """
    grid, a, b = _sample_grid(rng, config)
    tissue = np.zeros(grid.shape, np.uint8)
    under_fat, inner, abdomen = _paint_body(rng, grid, tissue, a, b)
    yv = b - rng.uniform(60, 80)  # vertebral body centre
    ivc = (-rng.uniform(15, 25), yv - rng.uniform(30, 38), rng.uniform(11, 15), rng.uniform(7, 10))
    _paint_organs(rng, grid, tissue, abdomen, a, b, yv, ivc)
    _paint_spine_vessels(rng, grid, tissue, under_fat, inner, abdomen, yv, ivc)
    image = _render(rng, tissue, grid, config)
    spacing = np.array(grid.spacing)
    size = np.array(grid.shape[::-1])
    origin = np.array([float(grid.x[0]) + rng.uniform(-20, 20),
                       float(grid.y[0]) + rng.uniform(-20, 20), rng.uniform(-350, 50)])
    direction = np.eye(3)
    arrays = [image, TISSUE_TO_LABEL[tissue], tissue]
    if rng.random() < config.flipped_fraction:  # stored right-to-left / posterior-to-anterior
        arrays = [np.ascontiguousarray(v[:, ::-1, ::-1]) for v in arrays]
        direction = np.diag([-1.0, -1.0, 1.0])
        origin[:2] += (size[:2] - 1) * spacing[:2]  # same physical position of the anatomy
    if rng.random() < config.oblique_fraction:
        direction = rotation(rng.uniform(-1, 1) * config.oblique_max_deg) @ direction
    return SynthCase(arrays[0], arrays[1], arrays[2], tuple(float(s) for s in spacing),
                     tuple(float(o) for o in origin), tuple(float(d) for d in direction.ravel()))

