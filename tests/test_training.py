"""Supervised training engine: losses, schedule, labelled-case selection, resume, checkpoints,
pretrained initialisation, run-folder contents and background workers.

Runs use the tiny dataset of :mod:`tests.helpers.datasets` (a few seconds each on 2 CPU cores).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import multiprocessing
import os
import random
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from tests.helpers.datasets import DATASET, tiny_home, tiny_overrides, trained_home

from sslunet.errors import InputError
from sslunet.networks import PlainConvUNet, build_network
from sslunet.planning.splits import choose_labeled
from sslunet.plans import Plans
from sslunet.runs import checkpoint as ckpt_mod
from sslunet.runs.checkpoint import load_checkpoint
from sslunet.training.api import FinetuneOptions, finetune
from sslunet.training.losses import (
    DiceCELoss,
    SoftDiceLoss,
    deep_supervision_weights,
    downsample_target,
    foreground_confusion,
)
from sslunet.training.pretrained import load_pretrained
from sslunet.training.schedule import learning_rate
from sslunet.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- losses

def naive_soft_dice(logits: torch.Tensor, target: torch.Tensor, batch_dice: bool,
                    smooth: float = 1e-5) -> float:
    """Voxel-by-voxel loop over (sample, class) with Python floats."""
    probs = torch.softmax(logits.double(), 1)
    b, k = probs.shape[:2]
    p = probs.reshape(b, k, -1).tolist()  # (B, K, voxels)
    t = target.reshape(b, -1).tolist()  # (B, voxels)
    counts = {}  # (sample, class) -> [tp, fp, fn]
    for i in range(b):
        for c in range(1, k):
            tp = fp = fn = 0.0
            for v in range(len(t[i])):
                is_c = 1.0 if t[i][v] == c else 0.0
                tp += p[i][c][v] * is_c
                fp += p[i][c][v] * (1 - is_c)
                fn += (1 - p[i][c][v]) * is_c
            counts[i, c] = [tp, fp, fn]
    dices = []
    if batch_dice:
        for c in range(1, k):
            tp, fp, fn = (sum(counts[i, c][j] for i in range(b)) for j in range(3))
            dices.append((2 * tp + smooth) / (2 * tp + fp + fn + smooth))
    else:
        dices = [(2 * tp + smooth) / (2 * tp + fp + fn + smooth)
                 for tp, fp, fn in counts.values()]
    return 1 - sum(dices) / len(dices)


@pytest.mark.parametrize("batch_dice", [False, True])
@pytest.mark.parametrize("spatial", [(5, 6), (3, 4, 5)])
def test_soft_dice_matches_naive_loop(batch_dice, spatial):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, *spatial, generator=g)
    target = torch.randint(0, 3, (2, *spatial), generator=g)
    got = SoftDiceLoss(batch_dice)(logits, target).item()
    assert got == pytest.approx(naive_soft_dice(logits, target, batch_dice), abs=1e-6)


def test_dice_ce_small_on_perfect_prediction_large_on_wrong_one():
    g = torch.Generator().manual_seed(2)
    target = torch.randint(0, 3, (2, 6, 7), generator=g)
    onehot = F.one_hot(target, 3).movedim(-1, 1).float()  # (B, K, Y, X)
    loss = DiceCELoss()
    assert loss(30 * onehot, target).item() < 1e-4
    assert loss(30 * onehot.roll(1, dims=1), target).item() > 1.0  # every voxel wrong


def test_deep_supervision_weights():
    assert deep_supervision_weights(1) == [1.0]
    w = deep_supervision_weights(4)
    expected = np.array([1, 0.5, 0.25, 0]) / 1.75
    assert np.allclose(w, expected) and w[-1] == 0.0
    assert sum(w) == pytest.approx(1.0)
    for n in range(2, 7):
        w = deep_supervision_weights(n)
        assert sum(w) == pytest.approx(1.0) and w[-1] == 0.0
        assert all(w[i + 1] == pytest.approx(w[i] / 2) for i in range(n - 2))


def test_downsample_target_shapes_and_nearest_values():
    g = torch.Generator().manual_seed(3)
    coarse = torch.randint(0, 3, (2, 1, 2, 4, 4), generator=g)
    # blocks of 2x2x2 constant voxels: nearest downsampling by 2 must recover ``coarse``
    target = coarse.repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4)
    outs = downsample_target(target, [(4, 8, 8), (2, 4, 4), (2, 2, 2)])
    assert [tuple(o.shape) for o in outs] == [(2, 4, 8, 8), (2, 2, 4, 4), (2, 2, 2, 2)]
    assert all(o.dtype == torch.long for o in outs)
    assert torch.equal(outs[0], target[:, 0])
    assert torch.equal(outs[1], coarse[:, 0])
    target2d = coarse[:, :, 0].repeat_interleave(4, 2).repeat_interleave(4, 3)  # (2, 1, 16, 16)
    outs2d = downsample_target(target2d, [(16, 16), (4, 4)])
    assert torch.equal(outs2d[1], coarse[:, 0, 0])


def test_foreground_confusion_known_example():
    target = torch.tensor([[0, 1, 1, 2, 2, 0]])  # (B=1, X=6)
    pred = torch.tensor([[0, 1, 2, 2, 0, 1]])
    logits = F.one_hot(pred, 3).movedim(-1, 1).float()  # (1, 3, 6)
    tp, fp, fn = foreground_confusion(logits, target)
    # class 1: tp at 1, fp at 5, fn at 2; class 2: tp at 3, fp at 2, fn at 4
    assert tp.tolist() == [1, 1] and fp.tolist() == [1, 1] and fn.tolist() == [1, 1]
    tp, fp, fn = foreground_confusion(torch.cat([logits, logits]), torch.cat([target, pred]))
    assert tp.tolist() == [3, 3] and fp.tolist() == [1, 1] and fn.tolist() == [1, 1]


# --------------------------------------------------------------------------- schedule

def test_poly_schedule_values():
    assert learning_rate(0, 100, 0.01) == pytest.approx(0.01)
    assert learning_rate(50, 100, 0.01) == pytest.approx(0.01 * 0.5 ** 0.9)
    assert learning_rate(99, 100, 0.01) == pytest.approx(0.01 * 0.01 ** 0.9)
    assert learning_rate(100, 100, 0.01) == 0.0
    assert learning_rate(150, 100, 0.01) == 0.0
    assert learning_rate(30, 100, 1.0, exponent=2.0) == pytest.approx(0.7 ** 2)


def test_warmup_is_linear_then_poly_over_the_remaining_steps():
    lrs = [learning_rate(s, 110, 0.1, warmup_steps=10) for s in range(110)]
    assert np.allclose(lrs[:10], [0.1 * (s + 1) / 10 for s in range(10)])
    assert np.allclose(np.diff(lrs[:10]), 0.01)
    # continuity at the boundary: warm-up ends at base_lr, and decay starts from base_lr
    assert lrs[9] == pytest.approx(0.1) and lrs[10] == pytest.approx(0.1)
    assert lrs[60] == pytest.approx(0.1 * (1 - 50 / 100) ** 0.9)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


# --------------------------------------------------------------------------- labelled cases

def test_choose_labeled_deterministic_nested_and_seed_dependent():
    ids = [f"c{i:02d}" for i in range(20)]
    assert choose_labeled(ids, 5, 3) == choose_labeled(list(reversed(ids)), 5, 3)
    for seed in range(5):
        small, big = choose_labeled(ids, 2, seed), choose_labeled(ids, 3, seed)
        assert set(small) < set(big) and len(big) == 3
    draws = {tuple(choose_labeled(ids, 5, seed)) for seed in range(5)}
    assert len(draws) >= 4
    assert choose_labeled(ids, None, 0) == ids and choose_labeled(ids, 20, 0) == ids
    with pytest.raises(InputError, match="exceeds the 20"):
        choose_labeled(ids, 21, 0)
    with pytest.raises(InputError):
        choose_labeled(ids, 0, 0)


def test_labeled_cases_json_reproducible_and_nested(tmp_path_factory, tmp_path, monkeypatch):
    paths = tiny_home(tmp_path_factory, tmp_path / "home")
    monkeypatch.setattr(Trainer, "fit", lambda self, resume=False: None)  # selection only

    def chosen(n, seed):
        opts = FinetuneOptions(DATASET, "2d", num_labeled=n, seed=seed, validate=False,
                               overrides=tiny_overrides())
        return json.loads((finetune(paths, opts) / "labeled_cases.json").read_text())

    first, again = chosen(2, 0), chosen(2, 0)
    assert first == again and len(first["cases"]) == 2
    assert not set(first["cases"]) & set(first["validation"])
    assert set(first["cases"]) < set(chosen(3, 0)["cases"])
    draws = {tuple(chosen(2, seed)["cases"]) for seed in range(4)}
    assert len(draws) > 1
    with pytest.raises(InputError, match="exceeds"):
        chosen(5, 0)  # fold 0 trains on 4 cases


# --------------------------------------------------------------------------- resume

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


# --------------------------------------------------------------------------- checkpoints

def _side_effect(path: str) -> None:
    Path(path).write_text("code from a checkpoint ran")


class Booby:
    """Unpickling this calls ``_side_effect``: what a malicious checkpoint could do."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return _side_effect, (self.path,)


def test_checkpoint_with_pickled_object_is_refused_not_executed(tmp_path):
    marker = tmp_path / "executed.txt"
    bad = tmp_path / "bad.pt"
    torch.save({"format": ckpt_mod.FORMAT, "version": ckpt_mod.VERSION, "x": Booby(marker)}, bad)
    with pytest.raises(InputError, match="cannot load checkpoint") as err:
        load_checkpoint(bad)
    assert "\n" not in str(err.value) and not marker.exists()
    # the same file really runs code when loaded unsafely: the test above can fail
    torch.load(bad, weights_only=False)
    assert marker.exists()


def test_foreign_or_missing_checkpoint_is_input_error(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(InputError, match="not an sslunet checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a zip file")
    with pytest.raises(InputError, match="cannot load"):
        load_checkpoint(tmp_path / "garbage.pt")
    with pytest.raises(InputError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_every_written_checkpoint_loads_weights_only(tmp_path_factory, tmp_path):
    _, run_dir = trained_home(tmp_path_factory, tmp_path / "home")
    files = sorted(run_dir.glob("*.pt"))
    assert [f.name for f in files] == ["checkpoint_best.pt", "checkpoint_final.pt"]
    for f in files:
        ckpt = torch.load(f, weights_only=True)
        assert ckpt["format"] == ckpt_mod.FORMAT and ckpt["configuration"] == "2d"
        assert ckpt["epoch"] >= 1 and "decoder.seg_layers.0.weight" in ckpt["network_weights"]
        assert load_checkpoint(f)["kind_of_checkpoint"] in ("best", "final")


# --------------------------------------------------------------------------- pretrained init

def _trained(tmp_path_factory, tmp_path):
    paths, run_dir = trained_home(tmp_path_factory, tmp_path / "home")
    plans = Plans.load(paths.preprocessed / DATASET / "plans.json")
    path = run_dir / "checkpoint_final.pt"
    return plans, load_checkpoint(path), path


def test_init_from_finetune_checkpoint_loads_all_but_seg_layers(tmp_path_factory, tmp_path):
    plans, ckpt, path = _trained(tmp_path_factory, tmp_path)
    config = plans.configuration("2d")
    net = build_network(config, 1, plans.num_classes, seed=123)
    fresh = {k: v.clone() for k, v in net.state_dict().items()}
    report = load_pretrained(net, ckpt, config, path)
    after, source = net.state_dict(), ckpt["network_weights"]
    seg = [k for k in after if k.startswith("decoder.seg_layers.")]
    assert seg and sorted(report["not_loaded"]) == sorted(seg)
    for k, v in after.items():
        assert torch.equal(v, fresh[k] if k in seg else source[k]), k
    # the trained full-resolution head differs from the fresh one, so it really was skipped
    assert not torch.equal(after["decoder.seg_layers.0.weight"],
                           source["decoder.seg_layers.0.weight"])
    assert any(k.startswith("encoder.") for k in report["loaded"])
    assert any(k.startswith("decoder.stages.") for k in report["loaded"])
    assert report["adapted_input_channels"] == []


def test_init_from_other_configuration_is_refused(tmp_path_factory, tmp_path):
    plans, ckpt, path = _trained(tmp_path_factory, tmp_path)
    config = plans.configuration("3d_fullres")
    net = build_network(config, 1, plans.num_classes)
    with pytest.raises(InputError, match="configuration '2d', not '3d_fullres'") as err:
        load_pretrained(net, ckpt, config, path)
    assert "\n" not in str(err.value)


def test_init_with_other_architecture_is_refused(tmp_path_factory, tmp_path):
    plans, ckpt, path = _trained(tmp_path_factory, tmp_path)
    config = plans.configuration("2d")
    wide = config.__class__(**{**config.__dict__, "features_per_stage": (8, 16, 32)})
    net = build_network(wide, 1, plans.num_classes)
    with pytest.raises(InputError, match="features_per_stage"):
        load_pretrained(net, ckpt, wide, path)
    # without plans in the checkpoint the tensor shapes still catch it
    with pytest.raises(InputError, match="has shape") as err:
        load_pretrained(net, {**ckpt, "plans": {}}, wide, path)
    assert "\n" not in str(err.value)


STEM = f"{PlainConvUNet.input_conv_key}.weight"  # the one tensor whose shape follows the channels


@pytest.mark.parametrize("n_old,n_new", [(1, 2), (2, 3)])
def test_init_adapts_input_channels(tmp_path_factory, tmp_path, n_old, n_new):
    plans, ckpt, path = _trained(tmp_path_factory, tmp_path)
    config = plans.configuration("2d")
    if n_old != 1:  # a checkpoint of a network with n_old input channels
        src = build_network(config, n_old, plans.num_classes, seed=5)
        ckpt = {**ckpt, "network_weights": src.state_dict()}
    old = ckpt["network_weights"][STEM]
    net = build_network(config, n_new, plans.num_classes, seed=9)
    report = load_pretrained(net, ckpt, config, path)
    new = net.state_dict()[STEM]
    assert report["adapted_input_channels"] == [STEM]
    assert new.shape == (old.shape[0], n_new, *old.shape[2:])
    for o, i in itertools.product(range(old.shape[0]), range(n_new)):
        expected = sum(old[o, j] for j in range(n_old)) / n_old / n_new
        assert torch.allclose(new[o, i], expected, atol=1e-7)
    # the point of the rule: a constant image gives the stem the same response as a
    # 1-channel checkpoint did (with n_old channels, 1/n_old of it: the mean is taken)
    const_old, const_new = torch.full((1, n_old, 5, 5), 2.0), torch.full((1, n_new, 5, 5), 2.0)
    assert torch.allclose(F.conv2d(const_old, old) / n_old, F.conv2d(const_new, new), atol=1e-5)


# --------------------------------------------------------------------------- run folder

def test_run_folder_contents(tmp_path_factory, tmp_path):
    paths, run_dir = trained_home(tmp_path_factory, tmp_path / "home")
    for name in ("checkpoint_final.pt", "checkpoint_best.pt", "metrics.jsonl", "training.log",
                 "progress.png", "labeled_cases.json", "run_config.json",
                 "validation/summary.json"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "checkpoint_latest.pt").exists()
    assert (run_dir.parent / "plans.json").is_file()
    records = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    for r in records:
        assert {"epoch", "train_loss", "val_loss", "pseudo_dice", "lr", "epoch_time"} <= set(r)
        assert 0 <= r["pseudo_dice"] <= 1 and np.isfinite(r["train_loss"])
    assert records[1]["lr"] < records[0]["lr"]
    assert (run_dir / "progress.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = (run_dir / "training.log").read_text()
    assert "epoch 1/2" in log and "epoch 2/2" in log
    splits = json.loads((paths.preprocessed / DATASET / "splits.json").read_text())
    chosen = json.loads((run_dir / "labeled_cases.json").read_text())
    assert chosen["cases"] == splits[0]["train"] and chosen["validation"] == splits[0]["val"]
    run_config = json.loads((run_dir / "run_config.json").read_text())
    assert run_config["training"]["epochs"] == 2 and run_config["options"]["dataset"] == DATASET

    summary = json.loads((run_dir / "validation/summary.json").read_text())
    assert set(summary["per_class"]) == {"left", "right"}
    assert all(0 <= c["dice"]["mean"] <= 1 for c in summary["per_class"].values())
    for case in splits[0]["val"]:
        pred = sitk.ReadImage(str(run_dir / "validation" / f"{case}.nii.gz"))
        ref = sitk.ReadImage(str(paths.raw / DATASET / "labelsTr" / f"{case}.nii.gz"))
        assert pred.GetSize() == ref.GetSize()
        for attr in ("GetSpacing", "GetOrigin", "GetDirection"):
            assert np.allclose(getattr(pred, attr)(), getattr(ref, attr)(), atol=1e-6), attr
        assert set(np.unique(sitk.GetArrayFromImage(pred))) <= {0, 1, 2}


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
