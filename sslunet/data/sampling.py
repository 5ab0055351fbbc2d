"""Random patch sampling from preprocessed cases, with nnU-Net's foreground oversampling.

Cases are stored 3D on disk as ``(C, Z, Y, X)`` (see :mod:`sslunet.preprocessing.storage`).
Every patch is read from a memory-mapped ``.npy``: only the voxels inside the patch are copied,
so a batch never loads a whole volume. The ``2d`` configuration picks one Z slice and crops an
in-plane patch from it, which the code treats as a 3D crop of depth 1.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np
from batchgenerators.dataloading.data_loader import SlimDataLoaderBase

from sslunet.errors import InputError
from sslunet.preprocessing.storage import ANNOTATED_KEY, case_paths, load_class_locations

SEG_PAD_VALUE = -1  # same as "outside the nonzero mask"; mapped to background later


class PatchDataLoader(SlimDataLoaderBase):
    """Endless stream of random patch batches in batchgenerators' dict format.

    Sampling follows nnU-Net v2 (Isensee et al., "nnU-Net", Nature Methods 2021): cases are
    drawn uniformly with replacement; the last ``round(batch_size * oversample_foreground)``
    samples of every batch are centred on a foreground voxel (a random foreground class among
    those listed in the case's ``class_locations``, then a random stored voxel of that class);
    the others are placed uniformly. When spatial augmentation follows, a larger patch
    (``patch_size_before_aug``) is read so that rotation and scaling do not pull in padding, and
    the patch may extend past the image by half the enlargement on each side, so that the final
    centre crop can still reach the image border. Where the image is smaller than the patch it
    is centred and padded (data 0, seg -1).

    Randomness: each process draws from ``np.random.default_rng([seed, thread_id])``;
    batchgenerators' workers call :meth:`set_thread_id`, so every worker gets a distinct,
    reproducible stream.

    Args:
        folder: Preprocessed configuration folder holding ``CASE.npy``/``CASE_seg.npy``/
            ``CASE.json``.
        case_ids: Cases to sample from.
        patch_size: Final patch size: 3 entries (3d) or 2 in-plane entries (2d).
        batch_size: Samples per batch.
        ndim: 2 or 3; must equal ``len(patch_size)``.
        oversample_foreground: Fraction of each batch (taken from its end) forced to contain
            foreground; cases without foreground locations fall back to uniform sampling.
        seed: Base seed of the sampling generator.
        need_seg: Whether to read and return ``seg`` (False for unlabeled SSL data).
        patch_size_before_aug: Size actually read, >= ``patch_size`` on every axis; defaults to
            ``patch_size``. See :func:`sslunet.data.augmentation.patch_size_before_augmentation`.
        max_cached_cases: How many cases' foreground locations to keep in memory.
        ignore_label: Value of unannotated voxels (the dataset's ``"ignore"`` label, or the
            value a sparse-slice budget writes); None when every voxel is annotated.
        annotated_slices: Sparse-slice budgets: case id -> the slices (indices along the first
            axis of the preprocessed array, the axis 2d trains over) whose labels may be used.
            Every other slice of a listed case reads as ``ignore_label``; patches are centred on
            annotated slices, forced ones on foreground inside them.

    With an ignore label, samples that are not forced onto foreground are centred on an
    annotated voxel (``ANNOTATED_KEY`` of the case's locations) instead of uniformly, so that a
    sparsely labelled case still gives every patch something to learn from (as nnU-Net v2).

    Batches are dicts: ``data`` float32 (B, C, *patch), ``seg`` int8 (B, 1, *patch) (only when
    ``need_seg``), ``keys`` list of B case ids.
    """

    def __init__(
        self,
        folder: str | Path,
        case_ids: Sequence[str],
        patch_size: Sequence[int],
        batch_size: int,
        ndim: int,
        oversample_foreground: float = 0.33,
        seed: int = 0,
        need_seg: bool = True,
        patch_size_before_aug: Sequence[int] | None = None,
        max_cached_cases: int = 256,
        ignore_label: int | None = None,
        annotated_slices: Mapping[str, Sequence[int]] | None = None,
    ):
        super().__init__(None, batch_size)
        self.folder = Path(folder)
        self.case_ids = list(case_ids)
        self.final_patch = tuple(int(p) for p in patch_size)
        self.read_patch = tuple(int(p) for p in (patch_size_before_aug or patch_size))
        self.ndim = ndim
        self.oversample_foreground = float(oversample_foreground)
        self.seed = int(seed)
        self.need_seg = need_seg
        self.max_cached_cases = max_cached_cases
        self.ignore_label = ignore_label
        self.annotated_slices = None if annotated_slices is None else {
            k: np.asarray(sorted(v), dtype=np.int64) for k, v in annotated_slices.items()}
        self._validate()
        self._rng: np.random.Generator | None = None
        self._locations: OrderedDict[str, _Locations] = OrderedDict()

    def _validate(self) -> None:
        if self.ndim not in (2, 3) or len(self.final_patch) != self.ndim:
            raise ValueError(f"patch_size {self.final_patch} does not match ndim={self.ndim}")
        if len(self.read_patch) != self.ndim or any(
            r < f for r, f in zip(self.read_patch, self.final_patch)
        ):
            raise ValueError(
                f"patch_size_before_aug {self.read_patch} must be >= patch_size {self.final_patch}"
            )
        if not self.case_ids:
            raise InputError("no cases to sample patches from", self.folder)
        if self.annotated_slices is not None and self.ignore_label is None:
            raise ValueError("annotated_slices need an ignore_label for the other slices")
        if not 0.0 <= self.oversample_foreground <= 1.0:
            raise ValueError(f"oversample_foreground must be in [0, 1], got {self.oversample_foreground}")
        for case_id in self.case_ids:
            data_p, seg_p, _ = case_paths(self.folder, case_id)
            if not data_p.exists():
                raise InputError(f"preprocessed image of case '{case_id}' is missing", data_p)
            if self.need_seg and not seg_p.exists():
                raise InputError(f"case '{case_id}' has no label map but labels are needed", seg_p)

    def set_thread_id(self, thread_id: int) -> None:
        """Called by batchgenerators in each worker; restarts the stream for that worker."""
        super().set_thread_id(thread_id)
        self._rng = None

    @property
    def rng(self) -> np.random.Generator:
        if self._rng is None:  # created lazily so a forked worker never shares its parent's state
            self._rng = np.random.default_rng([self.seed, self.thread_id])
        return self._rng

    def generate_train_batch(self) -> dict:
        rng = self.rng
        n_forced = round(self.batch_size * self.oversample_foreground)
        picks = rng.integers(len(self.case_ids), size=self.batch_size)
        datas, segs, keys = [], [], []
        for i, pick in enumerate(picks):
            case_id = self.case_ids[pick]
            force_fg = i >= self.batch_size - n_forced
            data, seg = self.sample_patch(case_id, force_fg, rng)
            datas.append(data)
            segs.append(seg)
            keys.append(case_id)
        n_channels = {d.shape[0] for d in datas}
        if len(n_channels) > 1:
            raise InputError(f"cases {keys} have different channel counts {sorted(n_channels)}", self.folder)
        batch = {"data": np.stack(datas), "keys": keys}  # (B, C, *patch)
        if self.need_seg:
            batch["seg"] = np.stack(segs)  # (B, 1, *patch)
        return batch

    def sample_patch(
        self, case_id: str, force_foreground: bool, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Read one patch of ``patch_size_before_aug`` from one case.

        Args:
            case_id: Case to read.
            force_foreground: Centre the patch on a stored foreground voxel (when there is one).
            rng: Source of randomness.

        Returns:
            ``(data (C, *patch) float32, seg (1, *patch) int8 or None)``; for 2d ``*patch`` is
            the in-plane patch (the Z axis of depth 1 is dropped).
        """
        data_p, seg_p, _ = case_paths(self.folder, case_id)
        data = np.load(data_p, mmap_mode="r")
        if data.ndim != 4:
            raise InputError(f"expected a (C, Z, Y, X) array, found shape {data.shape}", data_p)
        seg = np.load(seg_p, mmap_mode="r") if self.need_seg else None
        if seg is not None and seg.shape != (1, *data.shape[1:]):
            raise InputError(f"label shape {seg.shape} does not match image {data.shape}", seg_p)

        # 2d is a 3D crop of depth 1: one slice, chosen like any other axis position
        read = self.read_patch if self.ndim == 3 else (1, *self.read_patch)
        final = self.final_patch if self.ndim == 3 else (1, *self.final_patch)
        voxel = self._centre_voxel(case_id, force_foreground, data.shape[1:], rng)
        lbs = choose_lower_bounds(data.shape[1:], read, final, voxel, rng)
        data_patch = read_padded(data, lbs, read, 0.0, np.float32)
        seg_patch = None if seg is None else read_padded(seg, lbs, read, SEG_PAD_VALUE, np.int8)
        slices = self._slices(case_id)
        if seg_patch is not None and slices is not None:
            rows = lbs[0] + np.arange(read[0])  # first-axis index of each patch row
            seg_patch[:, ~np.isin(rows, slices)] = self.ignore_label  # unannotated slices
        if self.ndim == 2:
            data_patch = data_patch[:, 0]  # (C, 1, Y, X) -> (C, Y, X)
            seg_patch = None if seg_patch is None else seg_patch[:, 0]
        return data_patch, seg_patch

    def _slices(self, case_id: str) -> np.ndarray | None:
        return None if self.annotated_slices is None else self.annotated_slices.get(case_id)

    def _centre_voxel(self, case_id: str, force_foreground: bool, shape: Sequence[int],
                      rng: np.random.Generator) -> np.ndarray | None:
        """Where to centre the patch: a stored foreground voxel when forced (and there is one),
        else an annotated voxel when the case is sparsely labelled, else None (uniform)."""
        if not force_foreground and self.ignore_label is None:
            return None  # densely labelled: uniform, without reading the case's locations
        locations = self._class_locations(case_id)
        if force_foreground and locations.foreground:
            labels = sorted(locations.foreground)
            coords = locations.foreground[labels[rng.integers(len(labels))]]
            return coords[rng.integers(len(coords))]
        if locations.annotated is not None and len(locations.annotated):
            return locations.annotated[rng.integers(len(locations.annotated))]
        slices = self._slices(case_id)
        if slices is not None and len(slices):
            return np.array([rng.choice(slices), rng.integers(shape[1]), rng.integers(shape[2])])
        return None

    def _class_locations(self, case_id: str) -> "_Locations":
        """The case's stored voxel coordinates, kept to its annotated slices (LRU-cached)."""
        if case_id in self._locations:
            self._locations.move_to_end(case_id)
            return self._locations[case_id]
        props_path = case_paths(self.folder, case_id)[2]
        if not props_path.exists():
            raise InputError(f"properties of case '{case_id}' are missing", props_path)
        out = _Locations({}, None)
        slices = self._slices(case_id)
        for key, coords in load_class_locations(self.folder, case_id).items():
            try:
                arr = np.asarray(coords, dtype=np.int64).reshape(-1, 3)  # (N, 3) z, y, x
                label = None if key == ANNOTATED_KEY else int(key)
            except ValueError as err:
                raise InputError(f"malformed class_locations entry '{key}': {err}", props_path)
            if slices is not None:
                arr = arr[np.isin(arr[:, 0], slices)]
            if label is None:
                out = _Locations(out.foreground, arr)
            elif label > 0 and label != self.ignore_label and len(arr):
                out.foreground[label] = arr
        self._locations[case_id] = out
        if len(self._locations) > self.max_cached_cases:
            self._locations.popitem(last=False)
        return out


class _Locations(NamedTuple):
    foreground: dict[int, np.ndarray]  # label -> (N, 3) voxel coordinates
    annotated: np.ndarray | None  # (M, 3) annotated voxels of a sparsely labelled case


def choose_lower_bounds(
    shape: Sequence[int],
    read: Sequence[int],
    final: Sequence[int],
    voxel: Sequence[int] | None,
    rng: np.random.Generator,
) -> list[int]:
    """Lower corner of a patch of size ``read`` in an image of size ``shape`` (may be < 0).

    The corner may leave the image by half of ``pad = max(read - final, read - shape)`` on
    each side: enough for the final centre crop to touch the border, and enough to centre an
    image that is smaller than the patch. With ``voxel`` the patch is centred on it, clipped to
    that range (the voxel stays inside the final centre crop); without, it is uniform.
    """
    lbs = []
    for d, (s, r, f) in enumerate(zip(shape, read, final)):
        pad = max(r - f, r - s)
        lo = -(pad // 2)
        hi = s + pad - pad // 2 - r
        if voxel is None:
            lbs.append(int(rng.integers(lo, hi + 1)))
        else:
            lbs.append(int(np.clip(int(voxel[d]) - r // 2, lo, hi)))
    return lbs


def read_padded(
    array: np.ndarray, lbs: Sequence[int], size: Sequence[int], pad_value: float, dtype
) -> np.ndarray:
    """Copy ``array[:, lb:lb+size]`` (channel axis first) into a new array padded with ``pad_value``.

    Only the part of the window that lies inside ``array`` is read, so with a memory map only
    those voxels are loaded from disk.
    """
    out = np.full((array.shape[0], *size), pad_value, dtype=dtype)
    src, dst = [slice(None)], [slice(None)]
    for lb, n, s in zip(lbs, size, array.shape[1:]):
        start, stop = max(lb, 0), min(lb + n, s)
        src.append(slice(start, stop))
        dst.append(slice(start - lb, stop - lb))
    out[tuple(dst)] = np.asarray(array[tuple(src)])
    return out
