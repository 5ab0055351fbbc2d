"""Geometry of the synthetic phantom: a millimetre grid, implicit shapes (deformed ellipsoids,
smooth unions, distances to segments) and smooth random fields, all evaluated with
broadcasting. Used by :mod:`sslunet.dataset.phantom`, which paints the anatomy with them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """Voxel-centre coordinates in mm along each axis (float32, 1-D) and the exact spacing."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    spacing: tuple[float, float, float]  # (x, y, z)

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.z), len(self.y), len(self.x)

    def box(self, lo, hi):
        """Slices of the (z, y, x) grid inside the mm box [lo, hi] (x, y, z order), and its
        coordinates shaped (1, 1, w), (1, h, 1), (d, 1, 1) for broadcasting."""
        sl = tuple(slice(int(np.searchsorted(c, lo[i])), int(np.searchsorted(c, hi[i], "right")))
                   for i, c in ((2, self.z), (1, self.y), (0, self.x)))
        return (sl, self.x[sl[2]][None, None, :], self.y[sl[1]][None, :, None],
                self.z[sl[0]][:, None, None])


@dataclass(frozen=True)
class Blob:
    """A deformed ellipsoid: level < 0 inside.

    In unit coordinates u = R^T (p - c) / semi the level is ``|u| - 1 - sum_k a_k cos(w_k.u +
    phi_k)`` (low-frequency wobble), after an optional bend (u0 += bend * u2^2, kidney and
    spleen concavity) and taper (u0, u1 scaled by 1 / (1 + taper * u2): broad liver dome).
    """

    center: np.ndarray  # (3,) mm
    semi: np.ndarray  # (3,) mm
    rot: np.ndarray  # (3, 3), columns are the local axes in world coordinates
    waves: np.ndarray  # (K, 3)
    amps: np.ndarray  # (K,)
    phases: np.ndarray  # (K,)
    bend: float = 0.0
    taper: float = 0.0

    def bounds(self):
        r = self.semi.max() * (1.1 + self.amps.sum() + abs(self.bend)) / (1 - abs(self.taper))
        return self.center - r, self.center + r

    def level(self, x, y, z):
        # python floats keep the float32 grid in float32 (numpy scalars would promote it)
        c, semi, rot = self.center.tolist(), self.semi.tolist(), self.rot.tolist()
        d = (x - c[0], y - c[1], z - c[2])
        u = [sum(rot[j][i] / semi[i] * d[j] for j in range(3) if rot[j][i] != 0) for i in range(3)]
        u[0] = u[0] + self.bend * u[2] ** 2
        if self.taper:
            scale = np.maximum(1 + self.taper * u[2], 0.3)
            u[0], u[1] = u[0] / scale, u[1] / scale
        lev = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2) - 1
        for w, a, p in zip(self.waves.tolist(), self.amps.tolist(), self.phases.tolist()):
            lev = lev - a * np.cos(w[0] * u[0] + w[1] * u[1] + w[2] * u[2] + p)
        return lev


def rotation(z_deg: float = 0.0, y_deg: float = 0.0, x_deg: float = 0.0) -> np.ndarray:
    """Rotation Rz @ Ry @ Rx (degrees)."""
    cz, sz, cy, sy, cx, sx = (f(np.radians(a)) for a in (z_deg, y_deg, x_deg)
                              for f in (np.cos, np.sin))
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    return np.round(rz @ ry @ rx, 12)


def random_blob(rng, center, semi, rot=None, wobble=0.07, **kw) -> Blob:
    dirs = rng.normal(size=(3, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    waves = dirs * rng.uniform(1.5, 3.0, (3, 1))
    return Blob(np.asarray(center, float), np.asarray(semi, float),
                 np.eye(3) if rot is None else rot, waves, wobble * rng.uniform(0.4, 1.0, 3),
                 rng.uniform(0, 2 * np.pi, 3), **kw)


def smooth_fields(rng, grid: Grid, corr_mm: float, n: int) -> np.ndarray:
    """``n`` smooth unit-variance random fields, shape (n, z, y, x), correlation ~corr_mm.

    White noise on nodes ``corr_mm`` apart, interpolated with separable Gaussian kernels;
    the kernel rows are normalised so every voxel has variance exactly 1. ``einsum`` without
    BLAS keeps the result bit-identical whatever the thread count.
    """
    weights = []
    for c in (grid.z, grid.y, grid.x):
        nodes = np.arange(c[0] - corr_mm, c[-1] + 2 * corr_mm, corr_mm)
        w = np.exp(-0.5 * ((c[:, None] - nodes[None, :]) / (0.7 * corr_mm)) ** 2)
        weights.append((w / np.sqrt((w ** 2).sum(1, keepdims=True))).astype(np.float32))
    coarse = rng.standard_normal((n,) + tuple(w.shape[1] for w in weights), dtype=np.float32)
    f = np.einsum("nabc,xc->nabx", coarse, weights[2])  # (n, Cz, Cy, nx)
    f = np.einsum("nabx,yb->nayx", f, weights[1])  # (n, Cz, ny, nx)
    return np.einsum("nayx,za->nzyx", f, weights[0])  # (n, nz, ny, nx)


def smooth_min(d1, d2, k: float):
    """Polynomial smooth minimum (Quilez's ``smin``): joins two lobes without a crease."""
    h = np.clip(0.5 + 0.5 * (d2 - d1) / k, 0, 1)
    return d2 + (d1 - d2) * h - k * h * (1 - h)


def segment_distance(x, y, z, p0, p1):
    """Distance (mm) from grid points to the segment p0-p1."""
    d = (np.asarray(p1, float) - p0).tolist()
    p0 = np.asarray(p0, float).tolist()
    along = (x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]
    t = np.clip(along / (d[0] ** 2 + d[1] ** 2 + d[2] ** 2), 0, 1)
    return np.sqrt((x - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2
                   + (z - p0[2] - t * d[2]) ** 2)
