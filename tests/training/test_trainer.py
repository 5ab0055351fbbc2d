"""Tests for sslunet.training.trainer: resuming after a kill (state restored, each epoch
logged once) and background data workers that leave no process behind.

Runs use the tiny dataset of :mod:`tests.helpers.datasets` (a few seconds each on 2 CPU cores).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import multiprocessing
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from sslunet.errors import InputError
from sslunet.training.api import FinetuneOptions, finetune
from sslunet.training.trainer import Trainer
from tests.helpers.datasets import DATASET, tiny_home, tiny_overrides


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class SimulatedKill(Exception):
    pass


def _kill_at_epoch(monkeypatch, epoch: int) -> None:
    original = Trainer._run_epoch

    def run_epoch(self, *args, **kwargs):
        if self.epoch == epoch:
            raise SimulatedKill
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_run_epoch", run_epoch)


def _epochs(run_dir: Path) -> list[int]:
    return [json.loads(ln)["epoch"] for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- resume


def test_resume_after_kill_restores_state_and_logs_each_epoch_once(
        tmp_path_factory, tmp_path, monkeypatch):
    paths = tiny_home(tmp_path_factory, tmp_path / "home")
    opts = FinetuneOptions(DATASET, "3d_fullres", validate=False,
                           overrides=tiny_overrides(epochs=3))
    with monkeypatch.context() as m:
        _kill_at_epoch(m, 2)
        with pytest.raises(SimulatedKill):
            finetune(paths, opts)
    run_dir = next((paths.results / DATASET / "finetune").glob("*/fold_0"))
    latest = run_dir / "checkpoint_latest.pt"
    assert latest.exists() and not (run_dir / "checkpoint_final.pt").exists()
    assert _epochs(run_dir) == [0, 1]
    # a kill after epoch 2's metrics line but before its checkpoint leaves a record to drop
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 2, "train_loss": 9.0, "lr": 0.0}) + "\n")

    with pytest.raises(InputError, match="--continue"):
        finetune(paths, opts)  # an interrupted run needs --continue
    saved = torch.load(latest, weights_only=True)
    assert saved["epoch"] == 2
    seen = {}
    original_resume = Trainer.resume

    def spy(self):
        done = original_resume(self)
        # deep copies: state_dict() returns the live tensors, which training goes on to change
        seen.update(optimizer=copy.deepcopy(self.optimizer.state_dict()),
                    torch_rng=torch.get_rng_state(), np_rng=np.random.get_state(),
                    py_rng=random.getstate(),
                    weights={k: v.clone() for k, v in self.model.network.state_dict().items()},
                    epoch=self.epoch, done=done)
        return done

    monkeypatch.setattr(Trainer, "resume", spy)
    finetune(paths, dataclasses.replace(opts, continue_training=True))

    assert seen["done"] and seen["epoch"] == 2
    assert_state_dicts_equal(seen["optimizer"], saved["optimizer"])
    assert all(torch.equal(seen["weights"][k], v) for k, v in saved["network_weights"].items())
    assert torch.equal(seen["torch_rng"], saved["rng"]["torch"])
    assert np.array_equal(seen["np_rng"][1], saved["rng"]["numpy"]["keys"].numpy())
    assert seen["np_rng"][2] == saved["rng"]["numpy"]["pos"]
    assert seen["py_rng"][1] == tuple(saved["rng"]["python"][1])
    assert _epochs(run_dir) == [0, 1, 2]
    assert torch.load(run_dir / "checkpoint_final.pt", weights_only=True)["epoch"] == 3
    assert not latest.exists()
    assert "resumed from checkpoint_latest.pt at epoch 2" in (run_dir / "training.log").read_text()


def assert_state_dicts_equal(a, b) -> None:
    """Recursive equality of nested dicts/lists holding tensors and plain values."""
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            assert_state_dicts_equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_state_dicts_equal(x, y)
    else:
        assert a == b


def test_run_killed_before_its_first_checkpoint_restarts_cleanly(
        tmp_path_factory, tmp_path, monkeypatch):
    """Killed after epoch 0 was logged but before any checkpoint: no duplicate epoch 0."""
    paths = tiny_home(tmp_path_factory, tmp_path / "home")
    opts = FinetuneOptions(DATASET, "3d_fullres", validate=False, continue_training=True,
                           overrides=tiny_overrides(epochs=1, iters_per_epoch=1))
    original_save = Trainer.save

    def save(self, kind):
        if kind == "best":
            raise SimulatedKill
        original_save(self, kind)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "save", save)
        with pytest.raises(SimulatedKill):
            finetune(paths, opts)
    run_dir = next((paths.results / DATASET / "finetune").glob("*/fold_0"))
    assert _epochs(run_dir) == [0] and not list(run_dir.glob("*.pt"))
    finetune(paths, opts)
    assert _epochs(run_dir) == [0]


# --------------------------------------------------------------------------- workers


def _children(pid: int) -> set[int]:
    """Process ids whose parent is ``pid`` (Linux ``/proc``)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)"
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
def test_background_workers_run_completes_without_leftover_processes(tmp_path_factory, tmp_path):
    paths = tiny_home(tmp_path_factory, tmp_path / "home")
    before = _children(os.getpid())
    run_dir = finetune(paths, FinetuneOptions(
        DATASET, "2d", fold=1, validate=False,
        overrides=tiny_overrides(num_workers=2, epochs=1)))
    assert _epochs(run_dir) == [0]
    assert not multiprocessing.active_children()
    assert _children(os.getpid()) <= before
