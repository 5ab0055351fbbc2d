"""Tests for sslunet.training.param_groups (and the trainer applying them): encoder freezing
then unfreezing and per-part learning rates, on a tiny stand-in model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sslunet.training.config import TrainingConfig
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
