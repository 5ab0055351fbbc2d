"""Iterate augmented batches in the main process or in batchgenerators background workers."""

from __future__ import annotations

import os
from typing import Callable, Iterator

import numpy as np
import torch
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose

from sslunet.data.augmentation import SeedPythonRandom, global_rng_scope
from sslunet.utils.processes import die_with_parent


def worker_seed(seed: int, worker: int) -> int:
    """A distinct 32-bit seed per (base seed, worker), usable by ``np.random.seed``."""
    return int(np.random.SeedSequence([seed, worker]).generate_state(1)[0])


class BatchStream:
    """Endless iterator of augmented batches; close it (or use ``with``) to stop workers."""

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources; idempotent."""

    def __enter__(self) -> "BatchStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InProcessStream(BatchStream):
    """Sample and augment in the calling process (tests, CPU-only debugging).

    The transform's ``np.random`` draws come from a private RandomState seeded from
    ``worker_seed(seed, 0)``, so runs are reproducible and the caller's global state is
    untouched.
    """

    def __init__(self, dataloader, transform: AbstractTransform | None, seed: int):
        self.dataloader = dataloader
        self.transform = transform
        self._state = np.random.RandomState(worker_seed(seed, 0))
        self._closed = False

    def __next__(self) -> dict:
        if self._closed:
            raise RuntimeError("the batch stream was closed")
        batch = next(self.dataloader)
        if self.transform is not None:
            with global_rng_scope(self._state):
                batch = self.transform(**batch)
        return batch

    def close(self) -> None:
        self._closed = True


class WorkerStream(BatchStream):
    """batchgenerators ``MultiThreadedAugmenter``: one process per worker, each with its own
    queue, read round-robin so the batch order is reproducible for a given seed.

    Worker ``i`` seeds numpy's global generator (used by the transforms) with
    ``worker_seed(seed, i)``, re-seeds Python's ``random`` from it before every batch, and
    calls ``dataloader.set_thread_id(i)`` (used by the sampler).
    """

    def __init__(
        self,
        dataloader,
        transform: AbstractTransform | None,
        num_workers: int,
        pin_memory: bool,
        seed: int,
        num_cached_per_queue: int = 3,
    ):
        steps = [SeedPythonRandom()] + ([] if transform is None else [transform])
        self._augmenter = MultiThreadedAugmenter(
            _ParentBound(dataloader, os.getpid()),
            Compose(steps),
            num_processes=num_workers,
            num_cached_per_queue=num_cached_per_queue,
            seeds=[worker_seed(seed, i) for i in range(num_workers)],
            pin_memory=pin_memory and torch.cuda.is_available(),
        )
        self._closed = False

    def __next__(self) -> dict:
        if self._closed:
            raise RuntimeError("the batch stream was closed")
        return next(self._augmenter)

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the running workers (empty before the first batch and after close)."""
        return [p.pid for p in self._augmenter._processes]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            # batchgenerators' shutdown: stop producers, drain queues, join, terminate stragglers
            self._augmenter._finish()


class _ParentBound:
    """The data loader as a worker sees it: ``set_thread_id``, the first call batchgenerators
    makes in a new worker, binds the worker to die with its parent (see
    :func:`sslunet.utils.processes.die_with_parent`), so a training killed with ``kill -9``
    leaves no augmentation workers behind. Everything else is passed through."""

    _OWN = ("_dataloader", "_parent_pid")

    def __init__(self, dataloader, parent_pid: int):
        object.__setattr__(self, "_dataloader", dataloader)
        object.__setattr__(self, "_parent_pid", parent_pid)

    def set_thread_id(self, thread_id: int) -> None:
        if os.getpid() != self._parent_pid:
            die_with_parent(self._parent_pid)
            # a forked worker inherits the parent's intra-op thread count (one per core): with
            # several workers beside the training process that oversubscribes the cores
            # (issue 12); batchgenerators limits only BLAS threads
            torch.set_num_threads(1)
        self._dataloader.set_thread_id(thread_id)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._dataloader)

    def __getattr__(self, name: str):
        if name.startswith("__") or name in self._OWN:
            raise AttributeError(name)  # (un)pickling must not recurse
        return getattr(self._dataloader, name)

    def __setattr__(self, name: str, value) -> None:  # e.g. batchgenerators' was_initialized
        setattr(self._dataloader, name, value)


def make_loader(
    dataloader,
    transform: AbstractTransform | None,
    num_workers: int,
    pin_memory: bool = False,
    seed: int = 0,
    num_cached_per_queue: int = 3,
) -> BatchStream:
    """Wrap a batchgenerators data loader and transform into a closable batch iterator.

    Args:
        dataloader: e.g. :class:`~sslunet.data.sampling.PatchDataLoader`.
        transform: e.g. :func:`~sslunet.data.augmentation.training_transforms`; None = raw.
        num_workers: 0 = in the calling process; > 0 = that many background processes.
        pin_memory: Pin batch tensors (only takes effect when CUDA is available).
        seed: Base seed of the transforms' random draws.
        num_cached_per_queue: Batches buffered per worker.

    Returns:
        A :class:`BatchStream`; use it as a context manager so workers are always stopped.
    """
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if num_workers == 0:
        return InProcessStream(dataloader, transform, seed)
    return WorkerStream(dataloader, transform, num_workers, pin_memory, seed, num_cached_per_queue)


def stream_pair_factory(make_train: Callable[[int], BatchStream],
                        make_val: Callable[[int], BatchStream] | None):
    """The trainer's loader factory: ``seed -> (train stream, val stream or None, close)``.

    The trainer calls it once per fit (and per stage), so each run draws its batches from its
    own seed; ``close`` stops both streams' workers.
    """
    def factory(seed: int):
        train = make_train(seed)
        val = make_val(seed + 1) if make_val is not None else None

        def close():
            train.close()
            if val is not None:
                val.close()

        return train, val, close

    return factory
