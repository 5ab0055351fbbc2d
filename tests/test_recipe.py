"""Fine-tuning recipe parts: encoder freezing then unfreezing, per-part learning rates, the
study applying them to pretrained inits only, and the mirrored local views' correspondence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from tests.helpers.datasets import DATASET, tiny_overrides, trained_home
from sslunet.ssl.two_views import make_two_views, unmirror
from sslunet.training.config import TrainingConfig
from sslunet.training.api import FinetuneOptions, finetune
from sslunet.training.param_groups import finetune_groups
from sslunet.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Net(nn.Module):
    encoder_part = "encoder"  # the network contract's name of the encoder (networks/registry.py)

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.decoder = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))


class _Model(nn.Module):
    """Objective-model protocol of the Trainer: ``network`` attribute, ``forward -> loss``."""

    def __init__(self):
        super().__init__()
        self.network = _Net()

    def forward(self, batch):
        y = self.network.decoder(self.network.encoder(batch["x"]))
        return {"loss": ((y - batch["y"]) ** 2).mean()}


def _stream(seed):
    g = torch.Generator().manual_seed(seed)

    def batches():
        while True:
            yield {"x": torch.randn(8, 4, generator=g), "y": torch.randn(8, 2, generator=g)}

    return batches(), None, lambda: None


def _snapshot(module: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict, module: nn.Module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_frozen_encoder_does_not_move_then_unfreezes(tmp_path, optimizer):
    cfg = TrainingConfig(epochs=3, iters_per_epoch=3, val_iters=0, optimizer=optimizer,
                         lr=1e-2, freeze_encoder_epochs=2, num_workers=0)
    model = _Model()
    loaded = {"encoder.weight", "encoder.bias", "decoder.0.weight", "decoder.0.bias"}
    groups = finetune_groups(model, loaded, cfg)
    trainer = Trainer(cfg, model, _stream, tmp_path, torch.device("cpu"), param_groups=groups,
                      progress=False)
    train_iter, _, _ = _stream(0)
    total = cfg.epochs * cfg.iters_per_epoch
    for epoch in range(cfg.epochs):
        before = _snapshot(model.network)
        trainer._apply_freezing()
        for it in range(cfg.iters_per_epoch):
            trainer.train_step(next(train_iter), epoch * cfg.iters_per_epoch + it, total)
        trainer.epoch += 1
        moved = _changed(before, model.network)
        # weight decay alone would move a frozen tensor: frozen means no update at all
        assert {"encoder.weight", "encoder.bias"}.isdisjoint(moved) == (epoch < 2), (epoch, moved)
        assert {"decoder.0.weight", "decoder.1.weight"} <= moved
    log = (tmp_path / "training.log").read_text()
    assert "encoder_pretrained: frozen from epoch 1" in log
    assert "encoder_pretrained: unfrozen from epoch 3" in log


def test_pretrained_lr_scale_reaches_the_optimiser(tmp_path):
    cfg = TrainingConfig(epochs=1, iters_per_epoch=4, val_iters=0, optimizer="adamw", lr=1e-3,
                         pretrained_lr_scale=0.1, num_workers=0)
    model = _Model()
    groups = finetune_groups(model, {"encoder.weight", "encoder.bias", "decoder.0.weight"}, cfg)
    names = [g["name"] for g in groups]
    assert names == ["encoder_pretrained", "pretrained", "new"]
    by_name = {g["name"]: g for g in groups}
    assert len(by_name["pretrained"]["params"]) == 1  # decoder.0.weight only; its bias is new
    trainer = Trainer(cfg, model, _stream, tmp_path, torch.device("cpu"), param_groups=groups,
                      progress=False)
    train_iter, _, _ = _stream(0)
    trainer.train_step(next(train_iter), 1, 4)
    lrs = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert lrs["new"] == pytest.approx(trainer.lr)
    assert lrs["encoder_pretrained"] == pytest.approx(0.1 * trainer.lr)
    assert lrs["pretrained"] == pytest.approx(0.1 * trainer.lr)


def test_random_init_groups_are_encoder_and_new():
    cfg = TrainingConfig(freeze_encoder_epochs=1, pretrained_lr_scale=0.5, epochs=2)
    groups = finetune_groups(_Model(), (), cfg)
    assert [(g["name"], g["lr_scale"], g["frozen_epochs"]) for g in groups] == [
        ("encoder", 1.0, 1), ("new", 1.0, 0)]


def test_recipe_values_are_validated():
    with pytest.raises(ValueError, match="freeze_encoder_epochs"):
        TrainingConfig(epochs=2, freeze_encoder_epochs=3)
    with pytest.raises(ValueError, match="pretrained_lr_scale"):
        TrainingConfig(pretrained_lr_scale=0.0)


def test_finetune_with_recipe_freezes_resumes_and_records(tmp_path_factory, tmp_path):
    """End to end on the tiny dataset: from a checkpoint, encoder frozen for epoch 1, loaded
    tensors at 0.1 x lr; the recipe is recorded and the frozen encoder really did not move."""
    paths, run_dir = trained_home(tmp_path_factory, tmp_path / "home")
    ckpt = run_dir / "checkpoint_final.pt"
    opts = FinetuneOptions(DATASET, "2d", 0, str(ckpt), validate=False,
                           overrides=tiny_overrides(epochs=2, freeze_encoder_epochs=1,
                                                    pretrained_lr_scale=0.1),
                           model_dir=str(tmp_path / "model"))
    out = finetune(paths, opts)
    recorded = json.loads((out / "run_config.json").read_text())["training"]
    assert recorded["freeze_encoder_epochs"] == 1 and recorded["pretrained_lr_scale"] == 0.1
    log = (out / "training.log").read_text()
    assert "encoder_pretrained: frozen from epoch 1" in log
    assert "encoder_pretrained: unfrozen from epoch 2" in log
    final = torch.load(out / "checkpoint_final.pt", weights_only=True)
    groups = final["optimizer"]["param_groups"]
    assert {g["name"]: g["lr_scale"] for g in groups}["encoder_pretrained"] == 0.1


def test_mirrored_views_map_back_onto_view_one():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(6, 1, 8, 10)).astype(np.float32)
    identity = lambda **d: d  # noqa: E731 - no intensity change: geometry alone is compared
    out = make_two_views({"data": data}, np.random.default_rng(1), crop_fraction=None,
                         intensity=identity, mirror_view2=True)
    flips = out["view2_flips"]
    assert flips.shape == (6, 2) and 0 < flips.sum() < 12  # some images mirrored, not all
    v1, v2 = torch.from_numpy(out["data_view1"]), torch.from_numpy(out["data_view2"])
    assert not torch.equal(v1, v2)
    assert torch.equal(unmirror(v2, torch.from_numpy(flips), 2), v1)
