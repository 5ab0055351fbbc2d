"""What every pretraining objective shares: its setup, options, stages and trainable parts.

An objective is an ``nn.Module`` with a ``network`` attribute (the planned U-Net, so weights
transfer into fine-tuning without shape surprises), its own heads and its loss, and
``forward(batch) -> {"loss": scalar, ...}``, which is all :class:`~sslunet.training.trainer.
Trainer` needs. Besides the module, an objective says

* how its batches are built (:meth:`PretrainObjective.make_stream`: sampler + batchgenerators
  transforms, run in the background workers);
* which of its sub-modules it trains (:meth:`~PretrainObjective.trainable_modules`; the others
  get ``requires_grad=False``, so the trainer's optimiser never sees them), and which network
  tensors are worth transferring (:meth:`~PretrainObjective.transferable_prefixes`; heads never);
* its stages (one for most objectives; Chaitanya et al.'s global-then-local has two).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import torch
from torch import nn

from sslunet.data.loader import BatchStream
from sslunet.errors import InputError
from sslunet.networks import build_network
from sslunet.ssl.objectives.options import parse_options
from sslunet.paths import Paths
from sslunet.plans import ConfigurationPlan, Plans


@dataclass(frozen=True)
class PretrainSetup:
    """The data an objective pretrains on.

    Attributes:
        dataset: dataset folder name (``DatasetXXX_Name``).
        plans: the dataset's plans.
        config: the configuration trained (``2d`` or ``3d_fullres``).
        folder: the preprocessed folder of that configuration.
        paths: the folder layout (objectives with a reference dataset look it up there).
        seed: seeds the network and head initialisation.
        distributed: whether several processes train together (torchrun).
    """

    dataset: str
    plans: Plans
    config: ConfigurationPlan
    folder: Path
    paths: Paths
    seed: int = 0
    distributed: bool = False

    @property
    def num_input_channels(self) -> int:
        return self.plans.num_input_channels


@dataclass(frozen=True)
class Stage:
    """One training run of an objective.

    Attributes:
        name: stage name (``"main"`` for single-stage objectives).
        folder: sub-folder of the objective's run folder, ``""`` for the folder itself.
        epoch_share: fraction of the requested epochs this stage trains for.
    """

    name: str
    folder: str = ""
    epoch_share: float = 1.0


@dataclass(frozen=True)
class NoOptions:
    """Objectives without options (each option is declared with :func:`~sslunet.ssl.
    objectives.options.option`, which describes it for the command line)."""


def full_precision(t: torch.Tensor):
    """Context without autocast: contrastive logits divided by a small temperature need fp32."""
    return torch.autocast(t.device.type, enabled=False)


class PretrainObjective(nn.Module):
    """Base class of the registered objectives.

    Subclasses set ``Options`` (a frozen dataclass of hyper-parameters whose fields are
    declared with :func:`~sslunet.ssl.objectives.options.option`; ``sslunet_pretrain`` makes
    its flags from them), optionally ``default_training`` (TrainingConfig fields that differ
    from the pretraining defaults) and ``min_batch_size``, and implement :meth:`forward`,
    :meth:`make_stream`, :meth:`trainable_modules` and :meth:`transferable_prefixes`.

    Args:
        network: the planned U-Net (built by :meth:`create`).
        setup: the data it pretrains on.
        options: an instance of ``Options``.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    default_training: ClassVar[dict] = {}
    min_batch_size: ClassVar[int] = 1

    def __init__(self, network: nn.Module, setup: PretrainSetup, options):
        super().__init__()
        self.network = network
        self.setup = setup
        self.options = options
        self.stage = self.stages()[0].name

    # ------------------------------------------------------------------ construction
    @classmethod
    def output_channels(cls, setup: PretrainSetup, options) -> int:
        """Output channels of the network's head; restoration needs the input channels."""
        return setup.num_input_channels

    @classmethod
    def create(cls, setup: PretrainSetup, raw_options: dict | None = None) -> "PretrainObjective":
        """Parse the options, build the planned network and the objective, enter stage 1.

        The network is built without deep supervision: objectives that use its output use the
        full-resolution one.
        """
        options = parse_options(cls.name, cls.Options, dict(raw_options or {}))
        network = build_network(setup.config, setup.num_input_channels,
                                cls.output_channels(setup, options), deep_supervision=False,
                                seed=setup.seed)
        objective = cls(network, setup, options)
        objective.set_stage(objective.stages()[0].name)
        return objective

    # ------------------------------------------------------------------ stages and parts
    def stages(self) -> tuple[Stage, ...]:
        """The training runs of this objective, in order."""
        return (Stage("main"),)

    def set_stage(self, name: str) -> None:
        """Switch to stage ``name``: only its :meth:`trainable_modules` keep gradients."""
        if name not in {s.name for s in self.stages()}:
            raise ValueError(f"objective '{self.name}' has no stage {name!r}")
        self.stage = name
        trainable = tuple(m + "." for m in self.trainable_modules())
        for pname, p in self.named_parameters():
            p.requires_grad_(pname.startswith(trainable))

    def trainable_modules(self) -> tuple[str, ...]:
        """Sub-modules (paths relative to this module) trained in the current stage."""
        raise NotImplementedError

    def trained_modules(self) -> tuple[str, ...]:
        """Sub-modules trained up to and including the current stage (checkpoint metadata)."""
        return self.trainable_modules()

    def transferable_prefixes(self) -> tuple[str, ...]:
        """Network state-dict prefixes worth loading for fine-tuning (never heads)."""
        raise NotImplementedError

    def hyperparameters(self) -> dict:
        """The options plus values derived from the plan (JSON-ready)."""
        return dataclasses.asdict(self.options)

    # ------------------------------------------------------------------ data
    def check_batch_size(self, batch_size: int) -> None:
        if batch_size < self.min_batch_size:
            raise InputError(f"objective '{self.name}' needs --batch-size >= "
                             f"{self.min_batch_size}, got {batch_size}")

    def make_stream(self, case_ids: Sequence[str], batch_size: int, seed: int, train: bool,
                    num_workers: int, pin: bool) -> BatchStream:
        """Batches of the current stage for :meth:`forward`.

        Args:
            case_ids: the images to draw from.
            batch_size: images per batch (see each objective for what that counts).
            seed: seeds the sampler and the transforms.
            train: training (True) or held-out validation stream.
            num_workers: background processes.
            pin: pin memory.
        """
        raise NotImplementedError
