"""Tests for sslunet.data.loader: seeded batch streams, in this process or in worker processes
that are cleaned up.

The cases are the fixture ``cases`` (:mod:`tests.helpers.patches`).
"""

from __future__ import annotations

import multiprocessing
import os
import random

import numpy as np
import torch
from batchgenerators.transforms.abstract_transforms import AbstractTransform

from sslunet.data import (
    make_loader,
    patch_size_before_augmentation,
    training_transforms,
)
from tests.helpers.patches import patch_loader


def test_in_process_stream_is_seeded_and_leaves_global_state_alone(cases):
    def first_batch(seed):
        loader = patch_loader(cases, patch=(16, 32, 32), patch_size_before_aug=(24, 48, 48), seed=0)
        with make_loader(loader, training_transforms((16, 32, 32)), 0, seed=seed) as stream:
            return next(stream)["data"]

    np.random.seed(123)
    random.seed(123)
    before, before_py = np.random.get_state()[1].copy(), random.getstate()
    a, b, c = first_batch(1), first_batch(1), first_batch(2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    np.testing.assert_array_equal(np.random.get_state()[1], before)
    assert random.getstate() == before_py


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_worker_loader_yields_reproducible_batches_and_cleans_up(cases):
    patch = (16, 32, 32)
    read = patch_size_before_augmentation(patch)

    def run():
        loader = patch_loader(cases, patch=patch, batch_size=2, patch_size_before_aug=read, seed=3)
        stream = make_loader(loader, training_transforms(patch), num_workers=2, seed=3)
        with stream:
            batches = [next(stream) for _ in range(4)]
            pids = stream.worker_pids
            assert len(pids) == 2 and all(_alive(p) for p in pids)
        return batches, pids

    batches, pids = run()
    assert not any(_alive(p) for p in pids)
    assert not {p.pid for p in multiprocessing.active_children()} & set(pids)
    for b in batches:
        assert b["data"].shape == (2, 2, *patch) and b["seg"].shape == (2, 1, *patch)
    # workers 0 and 1 alternate and sample differently; a second run repeats the first
    assert not torch.equal(batches[0]["data"], batches[1]["data"])
    again, _ = run()
    for x, y in zip(batches, again):
        assert torch.equal(x["data"], y["data"]) and torch.equal(x["seg"], y["seg"])


class _RecordThreads(AbstractTransform):
    """Stores the torch intra-op thread count of the process that made the batch."""

    def __call__(self, **batch):
        batch["torch_threads"] = torch.get_num_threads()
        return batch


def test_workers_use_one_torch_thread_and_leave_the_parent_alone(cases):
    loader = patch_loader(cases, patch=(16, 32, 32), batch_size=1,
                          patch_size_before_aug=(16, 32, 32), seed=0)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # as on a 2-core machine: a forked worker would inherit 2
    try:
        with make_loader(loader, _RecordThreads(), num_workers=2, seed=0) as stream:
            counts = {next(stream)["torch_threads"] for _ in range(4)}
        assert counts == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
