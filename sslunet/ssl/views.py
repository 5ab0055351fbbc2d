"""Batch building for self-supervised objectives, beyond the generic patch pipeline.

* :class:`PartitionBatchLoader`: Chaitanya et al.'s (NeurIPS 2020) batches for the
  domain-specific losses G^D / G^{D-} / L^D: ``m`` volumes x ``S`` partitions, one slice (2d)
  or sub-volume (3d) per partition, with volume and partition ids.
* :class:`CorruptionTransform`: per-image corruption for restoration objectives, run in the
  background workers; the clean patch becomes the target.
* :class:`ZipStream`: one batch dict from several streams (ReFs' unlabelled + reference).
* :func:`patch_stream`: random patches of the plan's size, transformed in the workers (the
  generic pipeline every objective starts from).

Preprocessed cases are ``(C, Z, Y, X)`` with Z the transposed first axis, i.e. the axis with
the coarsest spacing (the slice axis of MR stacks); partitions run along it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from batchgenerators.dataloading.data_loader import SlimDataLoaderBase
from batchgenerators.transforms.abstract_transforms import AbstractTransform

from sslunet.data.loader import BatchStream, make_loader
from sslunet.data.sampling import PatchDataLoader, choose_lower_bounds, read_padded
from sslunet.errors import InputError
from sslunet.preprocessing.storage import case_paths

if TYPE_CHECKING:  # annotations only: the objectives import this module
    from sslunet.ssl.objectives.base import PretrainSetup

Corruption = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray | None]]


def partition_position(depth: int, partition: int, num_partitions: int,
                       rng: np.random.Generator) -> int:
    """A uniformly random slice index inside partition ``partition`` of ``depth`` slices.

    Partition ``p`` covers the relative positions ``[p/S, (p+1)/S)`` of the stack; the slice
    is ``floor(t * depth)`` for a uniform ``t`` in that interval. Every partition thus holds
    ``depth / S`` consecutive slices (+-1), and a stack thinner than ``S`` slices still gives a
    valid slice for every partition (neighbouring partitions then share slices).
    """
    t = (partition + rng.random()) / num_partitions
    return int(min(depth - 1, np.floor(t * depth)))


class PartitionBatchLoader(SlimDataLoaderBase):
    """Batches of ``num_volumes`` distinct volumes x ``num_partitions`` partitions.

    Row ``v * S + p`` holds a patch of volume ``v`` (of this batch) from partition ``p``:

    * 2d: one slice drawn uniformly inside the partition, an in-plane patch at a uniformly
      random position (padded with 0 where the image is smaller);
    * 3d: a sub-volume centred along Z on such a slice (clipped so it stays in the stack as
      far as it can), at a uniformly random in-plane position.

    Volumes are drawn without replacement within a batch (G^D needs one slice per (volume,
    partition)); ``num_volumes`` is clipped to the number of cases. Randomness:
    ``np.random.default_rng([seed, thread_id])`` per process, like
    :class:`~sslunet.data.sampling.PatchDataLoader`.

    Args:
        folder: preprocessed configuration folder.
        case_ids: the volumes.
        patch_size: final patch (2 in-plane entries for 2d, 3 for 3d).
        num_volumes: m.
        ndim: 2 or 3.
        num_partitions: S (Chaitanya et al.: 4).
        seed: base seed.

    Batches: ``data`` float32 (m*S, C, *patch); ``volume_ids`` int64 (m*S,), the index of the
    volume in ``case_ids`` (identical on every rank, so ids stay unique across processes);
    ``partition_ids`` int64 (m*S,); ``keys`` the case ids.
    """

    def __init__(self, folder: str | Path, case_ids: Sequence[str], patch_size: Sequence[int],
                 num_volumes: int, ndim: int, num_partitions: int = 4, seed: int = 0):
        self.case_ids = list(case_ids)
        if not self.case_ids:
            raise InputError("no volumes to sample partitions from", folder)
        if num_volumes < 1 or num_partitions < 1:
            raise ValueError("num_volumes and num_partitions must be >= 1")
        self.num_volumes = min(int(num_volumes), len(self.case_ids))
        super().__init__(None, self.num_volumes * num_partitions)
        self.folder = Path(folder)
        self.patch = tuple(int(p) for p in patch_size)
        if ndim not in (2, 3) or len(self.patch) != ndim:
            raise ValueError(f"patch_size {self.patch} does not match ndim={ndim}")
        self.ndim = ndim
        self.num_partitions = int(num_partitions)
        self.seed = int(seed)
        self._rng: np.random.Generator | None = None

    def set_thread_id(self, thread_id: int) -> None:
        super().set_thread_id(thread_id)
        self._rng = None

    @property
    def rng(self) -> np.random.Generator:
        if self._rng is None:  # lazily, so a forked worker never shares its parent's state
            self._rng = np.random.default_rng([self.seed, 7, self.thread_id])
        return self._rng

    def generate_train_batch(self) -> dict:
        rng = self.rng
        picks = rng.choice(len(self.case_ids), size=self.num_volumes, replace=False)
        datas, vols, parts, keys = [], [], [], []
        for v in picks:
            data = self._open(self.case_ids[v])
            for p in range(self.num_partitions):
                datas.append(self.sample(data, p, rng))
                vols.append(int(v))
                parts.append(p)
                keys.append(self.case_ids[v])
        return {"data": np.stack(datas),  # (m*S, C, *patch)
                "volume_ids": np.asarray(vols, dtype=np.int64),
                "partition_ids": np.asarray(parts, dtype=np.int64), "keys": keys}

    def _open(self, case_id: str) -> np.ndarray:
        path = case_paths(self.folder, case_id)[0]
        if not path.exists():
            raise InputError(f"preprocessed image of case '{case_id}' is missing", path)
        data = np.load(path, mmap_mode="r")
        if data.ndim != 4:
            raise InputError(f"expected a (C, Z, Y, X) array, found shape {data.shape}", path)
        return data

    def sample(self, data: np.ndarray, partition: int, rng: np.random.Generator) -> np.ndarray:
        """One patch ``(C, *patch)`` of ``data`` ``(C, Z, Y, X)`` from ``partition``."""
        depth = data.shape[1]
        z = partition_position(depth, partition, self.num_partitions, rng)
        in_plane = self.patch[-2:]
        lbs_yx = choose_lower_bounds(data.shape[2:], in_plane, in_plane, None, rng)
        if self.ndim == 2:
            patch = read_padded(data, [z, *lbs_yx], (1, *in_plane), 0.0, np.float32)
            return patch[:, 0]  # (C, 1, Y, X) -> (C, Y, X)
        pz = self.patch[0]
        (lb_z,) = choose_lower_bounds((depth,), (pz,), (pz,), (z,), rng)
        return read_padded(data, [lb_z, *lbs_yx], self.patch, 0.0, np.float32)


class CorruptionTransform(AbstractTransform):
    """Corrupt every image of the batch; the clean batch becomes ``target``.

    ``data`` (B, C, *S) -> ``data`` corrupted, ``target`` clean, and ``mask`` (B, 1, *S) bool
    when the corruption returns one (masked image modelling). Each batch draws one seed from
    numpy's global generator, which the loader seeds per worker (or scopes per call in the main
    process), and corrupts with a private ``Generator`` from it.

    Args:
        corrupt: ``(image (C, *S), rng) -> (corrupted (C, *S), mask (1, *S) or None)``; a
            module-level function or ``functools.partial`` of one, so workers can use it.
    """

    def __init__(self, corrupt: Corruption):
        self.corrupt = corrupt

    def __call__(self, **data_dict):
        clean = np.asarray(data_dict["data"], dtype=np.float32)
        rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))
        images, masks = [], []
        for sample in clean:
            image, mask = self.corrupt(sample, rng)
            images.append(image.astype(np.float32, copy=False))
            masks.append(mask)
        data_dict["data"] = np.stack(images)  # (B, C, *S)
        data_dict["target"] = clean
        if masks[0] is not None:
            data_dict["mask"] = np.stack(masks)  # (B, 1, *S)
        return data_dict


class ZipStream(BatchStream):
    """Merge one batch of each stream into one dict; keys get the stream's prefix.

    Args:
        streams: ``{prefix: stream}``; the prefix ``""`` keeps the keys as they are.
    """

    def __init__(self, streams: dict[str, BatchStream]):
        self.streams = dict(streams)

    def __next__(self) -> dict:
        out = {}
        for prefix, stream in self.streams.items():
            out.update({prefix + k: v for k, v in next(stream).items()})
        return out

    def close(self) -> None:
        for stream in self.streams.values():
            stream.close()


def patch_stream(setup: PretrainSetup, case_ids: Sequence[str], batch_size: int, seed: int,
                 transform: AbstractTransform, num_workers: int, pin: bool,
                 folder: Path | None = None, need_seg: bool = False,
                 oversample: float = 0.0) -> BatchStream:
    """Random patches of the plan's size from ``case_ids``, transformed in the workers.

    Args:
        setup: the pretraining setup (configuration, folder).
        case_ids: cases to sample from (uniformly, with replacement).
        batch_size: patches per batch.
        seed: sampler and transform seed.
        transform: batchgenerators transform producing the objective's batch.
        num_workers: background processes (0: in the calling process).
        pin: pin memory (CUDA only).
        folder: another preprocessed folder (a reference dataset); default ``setup.folder``.
        need_seg: read label maps too.
        oversample: share of each batch centred on foreground (needs labels).
    """
    cfg = setup.config
    loader = PatchDataLoader(folder or setup.folder, list(case_ids), tuple(cfg.patch_size),
                             batch_size, cfg.ndim, oversample, seed, need_seg)
    return make_loader(loader, transform, num_workers, pin, seed)
