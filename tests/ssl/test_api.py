"""Tests for sslunet.ssl.api, end to end: pretraining with every objective, 2d and 3d_fullres,
transfer to fine-tuning, resume, and the small rules (hold-out split, stage epochs).

The dataset (fixture ``tiny``) is the stack dataset of :mod:`tests.helpers.datasets`, a tiny
hand-made MR-like stack whose anatomy changes along the slice axis (a disc growing from the
first slice to the last, with a brighter core as the label), so that slices of the same
partition look alike across volumes, as Chaitanya et al.'s G^D assumes. Plans are shrunk to a
3-stage, 1-conv-per-stage U-Net with 4..16 features.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sslunet.errors import InputError
import sslunet.training.api as finetune_module
from sslunet.paths import Paths
from sslunet.plans import Plans
from sslunet.preprocessing.storage import list_cases
from sslunet.runs.checkpoint import load_checkpoint
from sslunet.runs.layout import pretrain_dir
from sslunet.ssl.api import (
    PretrainOptions,
    finetune_command,
    load_weights,
    pretrain,
    split_holdout,
    stage_epochs,
)
from sslunet.ssl.objectives import Stage, get_objective, list_objectives
from sslunet.training.trainer import Trainer, unwrap
from tests.helpers.pretraining import CONFIGS, make_setup

# fast settings; contrastive objectives get a larger learning rate for such short runs
RUN = dict(epochs=2, iters_per_epoch=16, num_workers=0, val_iters=1, batch_size=8)
LR = {"simclr": 3e-3, "contrastive": 3e-3, "refs": 3e-3}


def run_pretrain(paths: Paths, plans: Plans, objective: str, config: str, **overrides) -> Path:
    options = overrides.pop("objective_options", {})
    resume = overrides.pop("continue_training", False)
    seed = overrides.pop("seed", 0)
    ov = {**RUN, **({"lr": LR[objective]} if objective in LR else {}), **overrides}
    return pretrain(paths, PretrainOptions(plans.dataset_name, objective, config, device="cpu",
                                           seed=seed, continue_training=resume,
                                           objective_options=options, overrides=ov))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def runs(tiny):
    """``(objective, config) -> run folder``, each pretraining run once per module."""
    done: dict[tuple[str, str], Path] = {}

    def get(objective: str, config: str) -> Path:
        if (objective, config) not in done:
            done[objective, config] = run_pretrain(*tiny, objective, config)
        return done[objective, config]

    return get


def fixed_batch_loss(objective, stage: str, batches: int = 3) -> float:
    """Mean pretext loss on the same seeded batches of every image (eval mode, no grad)."""
    objective.set_stage(stage)
    objective.eval()
    ids = list_cases(objective.setup.folder)
    stream = objective.make_stream(ids, 8, 12345, False, 0, False)
    with torch.no_grad():
        losses = [float(objective(next(stream))["loss"]) for _ in range(batches)]
    stream.close()
    return sum(losses) / len(losses)


def read_metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- pretraining


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("objective", list_objectives())
def test_every_objective_pretrains_and_its_pretext_loss_decreases(tiny, runs, objective, config):
    """Per-batch losses of a 32-iteration contrastive run are too noisy to compare epochs, so
    the loss is measured on fixed batches: the untrained start (same seeds as the run) versus
    each stage's final weights. The trainer's records must exist too, with a val loss."""
    paths, plans = tiny
    run_dir = runs(objective, config)
    setup = make_setup(paths, plans, config)
    cls = get_objective(objective)
    previous = None
    for stage in cls.create(setup).stages():
        out = run_dir / stage.folder
        records = read_metrics(out)
        assert records and all(np.isfinite(r["train_loss"]) and "val_loss" in r for r in records)
        assert (out / "training.log").is_file() and (out / "progress.png").is_file()
        start = cls.create(setup)
        if previous is not None:  # a later stage starts from the previous stage's weights
            load_weights(start, load_checkpoint(previous))
        trained = cls.create(setup)
        load_weights(trained, load_checkpoint(out / "checkpoint_final.pt"))
        before, after = fixed_batch_loss(start, stage.name), fixed_batch_loss(trained, stage.name)
        assert after < 0.95 * before, f"{stage.name}: {before:.4f} -> {after:.4f}"
        previous = out / "checkpoint_final.pt"
    assert (run_dir / "checkpoint_final.pt").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("objective", list_objectives())
def test_checkpoint_is_weights_only_and_self_describing(tiny, runs, objective):
    paths, plans = tiny
    run_dir = runs(objective, "2d")
    ckpt = torch.load(run_dir / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert ckpt["kind"] == "pretrain" and ckpt["configuration"] == "2d"
    assert Plans.from_dict(ckpt["plans"]) == plans
    assert ckpt["num_input_channels"] == 1
    assert ckpt["objective"]["name"] == objective
    assert isinstance(ckpt["objective"]["hyperparameters"], dict)
    prefixes = ckpt["transferable_prefixes"]
    assert "encoder." in prefixes and not any("seg_layers" in p for p in prefixes)
    trained = ckpt["trained_modules"]
    assert "network.encoder" in trained
    # every transferable tensor was trained by the objective, so it is worth loading
    assert all(("network." + p).startswith(tuple(m + "." for m in trained)) for p in prefixes)
    decoder = [p for p in prefixes if p.startswith("decoder.")]
    if objective in ("regression", "genesis", "mae"):
        assert decoder == ["decoder.transpconvs.", "decoder.stages."]
    elif objective == "contrastive":
        assert decoder and ckpt["stage"] == "local" and "local_head" in trained
    else:
        assert decoder == []
    config = json.loads((run_dir / "pretrain_config.json").read_text())
    assert config["objective"]["name"] == objective
    assert set(config["images"]["train"]).isdisjoint(config["images"]["val"])
    assert len(config["images"]["val"]) == 1  # 5 % of 8 images, at least one


class _CapturingTrainer:
    """Stands in for the Trainer in fine-tuning: records the weights it would start from."""

    captured: dict = {}

    def __init__(self, cfg, model, *args, **kwargs):
        _CapturingTrainer.captured = {k: v.clone() for k, v in model.network.state_dict().items()}
        self.log = type("Log", (), {"log": staticmethod(lambda msg: None)})()

    def fit(self, resume=False):
        return None


@pytest.mark.slow
@pytest.mark.parametrize("objective", list_objectives())
def test_finetune_starts_from_the_pretrained_weights(tiny, runs, objective, monkeypatch):
    paths, plans = tiny
    run_dir = runs(objective, "2d")
    ckpt = load_checkpoint(run_dir / "checkpoint_final.pt")
    monkeypatch.setattr(finetune_module, "Trainer", _CapturingTrainer)
    # seed 1: a fresh network that differs from the pretraining's seed-0 initialisation
    opts = finetune_module.FinetuneOptions(plans.dataset_name, "2d", 0, objective, seed=1,
                                           device="cpu", validate=False,
                                           overrides={"epochs": 1, "num_workers": 0})
    ft_dir = finetune_module.finetune(paths, opts)
    start = _CapturingTrainer.captured
    prefixes = tuple(ckpt["transferable_prefixes"])
    source = ckpt["network_weights"]
    transferred = {k for k in start if k.startswith(prefixes) and "seg_layers" not in k}
    assert any(k.startswith("encoder.") for k in transferred)
    for k in transferred:
        assert torch.equal(start[k], source[k]), k
    for k in start:  # conv weights that were not transferred keep the new random init
        if k not in transferred and k.endswith("weight") and start[k].ndim > 1 \
                and start[k].shape == source[k].shape:
            assert not torch.equal(start[k], source[k]), k
    report = json.loads((ft_dir / "loaded_weights.json").read_text())
    assert set(report["loaded"]) == transferred
    assert report["objective"] == objective


@pytest.mark.slow
def test_checkpoint_of_another_configuration_is_refused(tiny, runs):
    paths, plans = tiny
    ckpt = runs("mae", "2d") / "checkpoint_final.pt"
    opts = finetune_module.FinetuneOptions(plans.dataset_name, "3d_fullres", 0, str(ckpt),
                                           device="cpu", validate=False,
                                           overrides={"epochs": 1, "num_workers": 0})
    with pytest.raises(InputError, match="configuration '2d'"):
        finetune_module.finetune(paths, opts)


# --------------------------------------------------------------------------- resume


@pytest.mark.slow
def test_resume_across_the_contrastive_stage_boundary(tiny, tmp_path, monkeypatch):
    paths0, plans = tiny
    paths = Paths(paths0.raw, paths0.preprocessed, tmp_path / "results")
    stop = {"epoch": 0}
    original = Trainer._run_epoch

    def interrupt(self, *args):
        if unwrap(self.model).stage == "local" and self.epoch == stop["epoch"]:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(Trainer, "_run_epoch", interrupt)
    fast = dict(epochs=4, iters_per_epoch=2)
    run_dir = pretrain_dir(paths, plans.dataset_name, "contrastive", "2d")
    with pytest.raises(KeyboardInterrupt):  # killed exactly at the stage boundary
        run_pretrain(paths, plans, "contrastive", "2d", **fast)
    stage1 = run_dir / "stage1_global" / "checkpoint_final.pt"
    assert stage1.is_file() and not (run_dir / "checkpoint_final.pt").exists()
    stage1_bytes = stage1.read_bytes()
    with pytest.raises(InputError, match="--continue"):
        run_pretrain(paths, plans, "contrastive", "2d", **fast)
    stop["epoch"] = 1  # killed again after one local epoch
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(paths, plans, "contrastive", "2d", continue_training=True, **fast)
    local = run_dir / "stage2_local"
    assert (local / "checkpoint_latest.pt").is_file()
    first_local_epoch = read_metrics(local)
    assert [r["epoch"] for r in first_local_epoch] == [0]
    stop["epoch"] = -1
    run_pretrain(paths, plans, "contrastive", "2d", continue_training=True, **fast)
    assert stage1.read_bytes() == stage1_bytes  # stage 1 was not trained again
    assert [r["epoch"] for r in read_metrics(run_dir / "stage1_global")] == [0, 1]
    records = read_metrics(local)
    assert [r["epoch"] for r in records] == [0, 1] and records[0] == first_local_epoch[0]
    final = load_checkpoint(run_dir / "checkpoint_final.pt")
    assert final["stage"] == "local" and final["epoch"] == 2
    assert any(p.startswith("decoder.stages.") for p in final["transferable_prefixes"])
    with pytest.raises(InputError, match="already finished"):
        run_pretrain(paths, plans, "contrastive", "2d", **fast)


# --------------------------------------------------------------------------- data, hold-out, stages


def test_include_test_needs_preprocessed_test_images(tiny, tmp_path):
    paths0, plans = tiny
    paths = Paths(paths0.raw, paths0.preprocessed, tmp_path / "results")
    with pytest.raises(InputError, match="--include-test"):
        pretrain(paths, PretrainOptions(plans.dataset_name, "mae", "2d", include_test=True,
                                        device="cpu", overrides=RUN))


def test_holdout_split_is_seeded_disjoint_and_never_empty():
    ids = [f"c{i:02d}" for i in range(40)]
    train, val = split_holdout(ids, 0.05, seed=3)
    assert len(val) == 2 and sorted(train + val) == ids and not set(train) & set(val)
    assert split_holdout(ids, 0.05, seed=3) == (train, val)
    assert split_holdout(ids, 0.05, seed=4) != (train, val)
    assert len(split_holdout(ids[:5], 0.05, 0)[1]) == 1  # at least one image held out
    assert split_holdout(ids[:1], 0.05, 0) == (ids[:1], [])  # ...but never the only one
    assert split_holdout(ids, 0.0, 0) == (ids, [])
    with pytest.raises(InputError):
        split_holdout(ids, 1.0, 0)


def test_stage_epochs_split_and_finetune_command():
    stages = (Stage("global", "a", 0.5), Stage("local", "b", 0.5))
    assert stage_epochs(80, stages) == [40, 40]
    assert stage_epochs(1, stages) == [1, 1]
    assert stage_epochs(10, (Stage("g", "a", 0.3), Stage("l", "b", 0.7))) == [3, 7]
    assert stage_epochs(7, (Stage("main"),)) == [7]
    opts = PretrainOptions("Dataset002_CMR", "contrastive", "3d_fullres")
    assert finetune_command(opts) == "sslunet_finetune -d Dataset002_CMR -c 3d_fullres " \
                                     "--init contrastive"
