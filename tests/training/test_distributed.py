"""Data-parallel fine-tuning on CPU: torchrun with 2 processes (gloo), and gradient averaging.

The torchrun tests launch ``python -m torch.distributed.run --nproc_per_node 2 -m
sslunet.cli.finetune`` on the tiny dataset; the synchronisation test spawns two gloo processes
that each take one :meth:`Trainer.train_step` on their own batch and compares the result with
a single-process step on the mean of both losses.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sslunet.networks import build_network
from sslunet.plans import ConfigurationPlan
from sslunet.training.config import TrainingConfig
from sslunet.training.distributed import DistContext
from sslunet.training.schedule import learning_rate
from sslunet.training.segmentation import SegmentationModel
from sslunet.training.trainer import Trainer, unwrap
from tests.helpers.cli import cli_env
from tests.helpers.datasets import DATASET, tiny_home
from tests.helpers.paths import REPO

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _text(out) -> str:
    return out.decode(errors="replace") if isinstance(out, bytes) else str(out or "")


def torchrun_finetune(home: Path, args: list[str]) -> subprocess.CompletedProcess:
    env = cli_env(home)  # without the caller's SSLUNET_* and torchrun variables
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "sslunet.cli.finetune", "-d", DATASET, "-f", "1", "--device", "cpu",
           "--iters-per-epoch", "2", "--val-iters", "1", "--batch-size", "2",
           "--num-workers", "0", *args]
    try:
        return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=300)
    except subprocess.TimeoutExpired as e:  # say where it hung
        pytest.fail(f"torchrun timed out; stderr tail:\n{_text(e.stderr)[-3000:]}")


def metrics_epochs(run_dir: Path) -> list[int]:
    return [json.loads(ln)["epoch"] for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_torchrun_two_processes_train_resume_and_only_rank0_writes(tmp_path_factory, tmp_path):
    paths = tiny_home(tmp_path_factory, tmp_path / "home")
    proc = torchrun_finetune(tmp_path / "home", ["--epochs", "2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = paths.results / DATASET / "finetune" / "random__2d__all" / "fold_1"
    # both processes ran the command; rank 0 alone logged, checkpointed and validated
    assert proc.stderr.count("sslunet folders:") == 2
    assert proc.stdout.count("model and logs:") == 1
    log = (run_dir / "training.log").read_text()
    assert log.count("fine-tuning") == 1 and log.count("epoch 1/2") == 1
    assert metrics_epochs(run_dir) == [0, 1]
    assert sorted(p.name for p in run_dir.glob("*.pt")) == ["checkpoint_best.pt",
                                                            "checkpoint_final.pt"]
    assert json.loads((run_dir / "validation" / "summary.json").read_text())["num_cases"] == 1
    assert not list(run_dir.rglob("*.tmp*"))

    # a kill between the last "latest" checkpoint and the final one leaves exactly this state
    # (both hold the same training state); extend the run to 3 epochs under torchrun
    final = torch.load(run_dir / "checkpoint_final.pt", weights_only=True)
    (run_dir / "checkpoint_final.pt").rename(run_dir / "checkpoint_latest.pt")
    proc = torchrun_finetune(tmp_path / "home", ["--epochs", "3", "--continue",
                                                 "--no-validation"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (run_dir / "training.log").read_text()
    assert log.count("resumed from checkpoint_latest.pt at epoch 2") == 1
    assert metrics_epochs(run_dir) == [0, 1, 2]
    assert not (run_dir / "checkpoint_latest.pt").exists()
    resumed = torch.load(run_dir / "checkpoint_final.pt", weights_only=True)
    assert resumed["epoch"] == 3
    key = "encoder.stages.0.0.conv.weight"
    assert not torch.equal(resumed["network_weights"][key], final["network_weights"][key])


# --------------------------------------------------------------------------- gradient sync

PLAN = ConfigurationPlan(
    name="2d", data_identifier="x", spacing=(1.0, 1.0), patch_size=(16, 16),
    median_image_size=(16, 16), batch_size=2, pool_op_kernel_sizes=((1, 1), (2, 2), (2, 2)),
    conv_kernel_sizes=((3, 3),) * 3, features_per_stage=(4, 8, 8),
    n_conv_per_stage_encoder=(1, 1, 1), n_conv_per_stage_decoder=(1, 1),
    normalization_schemes=("zscore",), use_mask_for_norm=(False,), batch_dice=False)
CFG = TrainingConfig(epochs=1, iters_per_epoch=1, lr=0.05, num_workers=0, amp=False)


def rank_batch(rank: int) -> dict:
    """A different batch per rank: (2, 1, 16, 16) images and labels."""
    g = torch.Generator().manual_seed(100 + rank)
    return {"data": torch.randn(2, 1, 16, 16, generator=g),
            "seg": torch.randint(0, 3, (2, 1, 16, 16), generator=g)}


def _sync_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        # each rank starts from different weights: DDP must broadcast rank 0's
        model = SegmentationModel(build_network(PLAN, 1, 3, seed=rank), batch_dice=False)
        trainer = Trainer(CFG, model, None, Path(out_dir), torch.device("cpu"),
                          DistContext(rank, rank, world), progress=False)
        trainer.train_step(rank_batch(rank), 0, 1)
        torch.save(unwrap(trainer.model).network.state_dict(), Path(out_dir) / f"rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # About 1 spawned gloo process in 40 aborted at interpreter exit, after all its work
    # ("terminate called without an active exception": a C++ thread destroyed while joinable),
    # with or without the teardown above; leaving without C++ static destructors made 70 of 70
    # runs exit cleanly.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _reference_step(batches: list[dict]) -> dict:
    """One single-process step from rank 0's weights on the mean of the per-rank losses."""
    model = SegmentationModel(build_network(PLAN, 1, 3, seed=0), batch_dice=False)
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=learning_rate(0, 1, CFG.lr), momentum=CFG.momentum,
                          nesterov=True, weight_decay=CFG.weight_decay)
    loss = sum(model(b)["loss"] for b in batches) / len(batches)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, CFG.grad_clip)
    opt.step()
    return model.network.state_dict()


@pytest.mark.slow
def test_ddp_ranks_stay_in_sync_with_averaged_gradients(tmp_path):
    mp.spawn(_sync_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    averaged = _reference_step([rank_batch(0), rank_batch(1)])
    own = _reference_step([rank_batch(0)])
    assert all(torch.allclose(w0[k], averaged[k], atol=1e-6) for k in w0)
    assert not all(torch.allclose(w0[k], own[k], atol=1e-6) for k in w0)
