"""The training loop, assembled from parts: config, model (network + objective), loaders.

The model passed in is an ``nn.Module`` whose ``forward(batch)`` returns a dict with a scalar
``"loss"`` and optionally per-class hard counts ``"tp"``, ``"fp"``, ``"fn"`` (segmentation
validation). Putting the objective inside the module means DistributedDataParallel sees one
forward and synchronises every gradient, whatever the objective computes.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn
from tqdm import tqdm

from sslunet.errors import InputError
from sslunet.runs.checkpoint import (
    joined_weights,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    split_weights,
)
from sslunet.runs.layout import checkpoint_path
from sslunet.training.config import TrainingConfig
from sslunet.training.distributed import DistContext, all_reduce_sum
from sslunet.training.param_groups import single_group
from sslunet.training.progress import RunLog
from sslunet.training.schedule import learning_rate
from sslunet.utils.acceleration import (
    accelerate, autocast, autocast_dtype, compiled_forward, spatial_dims,
)

Batch = dict[str, torch.Tensor]
LoaderFactory = Callable[[int], tuple[Iterator[Batch], Iterator[Batch] | None, Callable[[], None]]]

def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class Trainer:
    """Runs epochs of training and validation, logs, checkpoints and resumes.

    Args:
        cfg: the training configuration.
        model: objective model (see module docstring); it must have a ``network`` attribute,
            whose weights are saved separately for transfer.
        make_loaders: ``seed -> (train iterator, val iterator or None, close)``; called again
            with a new seed on resume.
        out_dir: the run folder.
        device: where to train.
        dist_ctx: torchrun context (rank 0 alone writes).
        meta: extra self-describing fields stored in every checkpoint.
        param_groups: optimiser groups with ``lr_scale`` and ``frozen_epochs`` (see
            :mod:`sslunet.training.param_groups`); default: every trainable parameter at lr.
    """

    def __init__(self, cfg: TrainingConfig, model: nn.Module, make_loaders: LoaderFactory,
                 out_dir: Path, device: torch.device, dist_ctx: DistContext = DistContext(),
                 meta: dict | None = None, progress: bool = True,
                 param_groups: list[dict] | None = None):
        self.cfg, self.device, self.dist, self.meta = cfg, device, dist_ctx, meta or {}
        self.out_dir = Path(out_dir)
        self.model = model.to(device)
        self.make_loaders = make_loaders
        self.progress = progress and dist_ctx.is_main
        self.log = RunLog(self.out_dir, enabled=dist_ctx.is_main)
        accelerate(unwrap(self.model).network, device, cfg.compile, cfg.channels_last,
                   lambda msg: self.log.log(f"warning: {msg}"))
        params = param_groups if param_groups is not None else single_group(self.model)
        self.lr = cfg.lr
        if cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                             nesterov=True, weight_decay=cfg.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.amp_dtype = autocast_dtype(device, cfg.amp,
                                        spatial_dims=spatial_dims(unwrap(self.model).network))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.epoch, self.ema, self.best = 0, None, -math.inf
        self._compile_proven = False  # a training step has run (backward included)
        if dist_ctx.enabled:
            ids = [device.index] if device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=ids, find_unused_parameters=True)

    # ----------------------------------------------------------------- checkpoints
    def path(self, kind: str) -> Path:
        return checkpoint_path(self.out_dir, kind)

    def save(self, kind: str) -> None:
        if not self.dist.is_main:
            return
        network_weights, objective_weights = split_weights(unwrap(self.model).state_dict())
        save_checkpoint(self.path(kind), {
            **self.meta,
            "kind_of_checkpoint": kind,
            "network_weights": network_weights,
            "objective_weights": objective_weights,
            "optimizer": self.optimizer.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "ema_metric": self.ema, "best_metric": self.best,
            "training_config": asdict(self.cfg),
            "rng": rng_state(),
        })

    def resume(self) -> bool:
        """Continue from ``checkpoint_latest.pt`` if present; returns whether it did."""
        path = self.path("latest")
        if not path.exists():
            return False
        ckpt = load_checkpoint(path, map_location="cpu", purpose="resume")
        try:
            unwrap(self.model).load_state_dict(joined_weights(ckpt))
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scaler.load_state_dict(ckpt["grad_scaler"])
        except (RuntimeError, ValueError, KeyError) as e:  # e.g. plans.json edited since
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise InputError(f"checkpoint does not fit this run's network or optimiser "
                             f"({first}); delete the run folder to start over", path) from None
        self.epoch, self.ema, self.best = ckpt["epoch"], ckpt["ema_metric"], ckpt["best_metric"]
        set_rng_state(ckpt["rng"])
        self.log.truncate_metrics(self.epoch)
        self.log.log(f"resumed from {path.name} at epoch {self.epoch}")
        return True

    # ----------------------------------------------------------------- steps
    def _to_device(self, batch: Batch) -> Batch:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                for k, v in batch.items()}

    def _autocast(self):
        return autocast(self.device, self.amp_dtype)

    def train_step(self, batch: Batch, step: int, total: int) -> float:
        warm = self.cfg.warmup_epochs * self.cfg.iters_per_epoch
        self.lr = learning_rate(step, total, self.cfg.lr, warm, self.cfg.poly_exponent)
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr * g.get("lr_scale", 1.0)
        try:
            out = self._forward_backward(batch)
        except Exception as e:
            # torch compiles the backward pass at its first call, outside the forward's own
            # fallback: a compiler failure there switches to eager mode and redoes the step
            compiled = compiled_forward(unwrap(self.model).network)
            if self._compile_proven or compiled is None or compiled.failed:
                raise
            compiled.give_up(e)
            out = self._forward_backward(batch)
        self._compile_proven = True
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(
            [p for g in self.optimizer.param_groups for p in g["params"]], self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(out["loss"].detach())

    def _forward_backward(self, batch: Batch) -> dict:
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            out = self.model(self._to_device(batch))
        self.scaler.scale(out["loss"]).backward()
        return out

    @torch.no_grad()
    def validate(self, val_iter: Iterator[Batch]) -> dict:
        self.model.eval()
        loss_sum = torch.zeros(2, device=self.device)  # (sum of losses, count)
        counts = None
        for _ in range(self.cfg.val_iters):
            with self._autocast():
                out = self.model(self._to_device(next(val_iter)))
            loss_sum += torch.stack([out["loss"].float().detach(), torch.ones((), device=self.device)])
            if "tp" in out:
                c = torch.stack([out["tp"], out["fp"], out["fn"]]).double()  # (3, K-1)
                counts = c if counts is None else counts + c
        self.model.train()
        loss_sum = all_reduce_sum(loss_sum)
        rec = {"val_loss": float(loss_sum[0] / loss_sum[1])}
        if counts is not None:
            tp, fp, fn = all_reduce_sum(counts)
            dice = (2 * tp / (2 * tp + fp + fn).clamp_min(1)).tolist()
            rec["pseudo_dice_per_class"] = dice
            rec["pseudo_dice"] = sum(dice) / len(dice)
        return rec

    # ----------------------------------------------------------------- loop
    def _epoch_record(self, epoch, losses, lr, val, seconds) -> dict:
        rec = {"epoch": epoch, "train_loss": sum(losses) / len(losses), "lr": lr,
               "epoch_time": round(seconds, 3), **val}
        metric = rec.get("pseudo_dice", -rec.get("val_loss", rec["train_loss"]))
        a = self.cfg.ema_alpha
        self.ema = metric if self.ema is None else a * self.ema + (1 - a) * metric
        rec["ema_metric"] = self.ema
        return rec

    def fit(self, resume: bool = False) -> Path:
        """Train to ``cfg.epochs``; returns the final checkpoint's path."""
        if not (resume and self.resume()):
            # starting from epoch 0: drop records of an attempt killed before its first
            # checkpoint, which would otherwise appear twice
            self.log.truncate_metrics(0)
        cfg = self.cfg
        total = cfg.epochs * cfg.iters_per_epoch
        seed = cfg.seed * 1000 + self.dist.rank * 100_003 + self.epoch
        train_iter, val_iter, close = self.make_loaders(seed)
        try:
            while self.epoch < cfg.epochs:
                self._run_epoch(train_iter, val_iter, total)
        finally:
            close()
        self.save("final")
        if self.dist.is_main and self.path("latest").exists():
            self.path("latest").unlink()  # the final checkpoint supersedes it
        return self.path("final")

    def _apply_freezing(self) -> None:
        """Groups with ``frozen_epochs > epoch`` get no gradient (so no update and no decay)."""
        for g in self.optimizer.param_groups:
            frozen = self.epoch < g.get("frozen_epochs", 0)
            if g["params"] and g["params"][0].requires_grad == frozen:
                for p in g["params"]:
                    p.requires_grad_(not frozen)
                if self.epoch > 0 or frozen:
                    self.log.log(f"{g.get('name', 'group')}: {'frozen' if frozen else 'unfrozen'}"
                                 f" from epoch {self.epoch + 1}")

    def _run_epoch(self, train_iter, val_iter, total: int) -> None:
        cfg, epoch = self.cfg, self.epoch
        self._apply_freezing()
        t0 = time.perf_counter()
        self.model.train()
        losses = []
        bar = tqdm(range(cfg.iters_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not self.progress, leave=False, unit="it")
        for it in bar:
            losses.append(self.train_step(next(train_iter), epoch * cfg.iters_per_epoch + it,
                                          total))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        val = self.validate(val_iter) if val_iter is not None and cfg.val_iters > 0 else {}
        lr = self.lr
        rec = self._epoch_record(epoch, losses, lr, val, time.perf_counter() - t0)
        self.epoch += 1
        self.log.append_metrics(rec)
        shown = f" pseudo-Dice {rec['pseudo_dice']:.4f}" if "pseudo_dice" in rec else ""
        vl = f" val {rec['val_loss']:.4f}" if "val_loss" in rec else ""
        self.log.log(f"epoch {epoch + 1}/{cfg.epochs}: train {rec['train_loss']:.4f}{vl}{shown} "
                     f"lr {lr:.2e} ({rec['epoch_time']:.1f} s)")
        if self.ema > self.best:
            self.best = self.ema
            self.save("best")
        if self.epoch % cfg.checkpoint_every == 0 or self.epoch == cfg.epochs:
            self.save("latest")
        self.log.plot()

