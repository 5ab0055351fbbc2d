"""``refs``: ReFs, a self-supervised loss plus a supervised reference task, gradient-matched.

Paper: Xie et al., "ReFs: A hybrid pre-training paradigm for 3D medical image segmentation"
(Medical Image Analysis 91:103023, 2024). The encoder should have a low loss on both the
self-supervised task and an off-the-shelf reference segmentation task, *and* similar gradients
from both. The paper publishes neither the formula nor the weights; **our reading** (stated as
such in the docs)::

    L_ssl = NT-Xent of two views (as ``simclr``)          on unlabelled patches x_u
    L_ref = CE + soft Dice of the U-Net's output           on labelled patches (x_l, y_l)
    g_ssl = d L_ssl / d theta_m,  g_ref = d L_ref / d theta_m     (create_graph=True)
    L_gm  = 1 - cos(vec(g_ssl), vec(g_ref))               in [0, 2]
    L     = L_ssl + lambda_ref L_ref + lambda_gm L_gm     (one double backpropagation)

Cost control (our choice): ``theta_m`` = the parameters of the last ``match_stages`` (default
2) encoder stages, not the whole encoder; the first-order gradients are taken only with
respect to those, and the extra second-order pass is one backward through the graph of the two
gradients. Validation reports ``L_ssl + lambda_ref L_ref`` (no gradients are available there).

The reference task runs through the whole planned U-Net, whose output has the reference
dataset's classes. ``--reference self`` uses this dataset's labelled images (note: in a
label-efficiency study these labels are then seen during pretraining); ``--reference DATASET``
another preprocessed dataset planned with the same architecture for this configuration (the
network is shared, so other plans are refused). Only the encoder is transferred (as in our
notes); the decoder learnt the reference task. DistributedDataParallel does not support
``torch.autograd.grad`` inside the forward pass, so ``refs`` refuses to run under torchrun.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from sslunet.data.augmentation import (
    patch_size_before_augmentation,
    training_transforms,
    validation_transforms,
)
from sslunet.data.loader import BatchStream, make_loader
from sslunet.data.sampling import PatchDataLoader
from sslunet.dataset.resolve import resolve_dataset_name
from sslunet.errors import InputError
from sslunet.networks import build_network
from sslunet.preprocessing.storage import case_paths, list_cases, load_plans, preprocessed_dir
from sslunet.ssl.losses import NTXentLoss, encoder_gradients, gradient_matching_loss
from sslunet.ssl.objectives.base import PretrainObjective, full_precision
from sslunet.ssl.objectives.options import OptionError, option, parse_options, require
from sslunet.ssl.objectives.registry import register_objective
from sslunet.ssl.objectives.simclr import (
    CONTRASTIVE_TRAINING, TwoViewContrastiveOptions, global_head, two_view_embeddings,
)
from sslunet.ssl.two_views import contrastive_view_transforms
from sslunet.ssl.views import ZipStream, patch_stream
from sslunet.training.losses import DiceCELoss
from sslunet.training.pretrained import ARCH_FIELDS
from sslunet.utils.argtypes import nonnegative_float, positive_int

SSL_LOSSES = ("simclr",)
REF_OVERSAMPLE = 0.33  # nnU-Net's foreground oversampling for the supervised reference task


@dataclass(frozen=True)
class RefsOptions(TwoViewContrastiveOptions):
    """The SSL loss's temperature, proj_* and crop_min as in ``simclr``; then the reference task
    and how its gradients are matched."""

    ssl_loss: str = option("simclr", "self-supervised loss", choices=SSL_LOSSES)
    reference: str = option("self", "reference segmentation task: 'self' (this dataset's "
                                     "labels) or another planned dataset")
    lambda_ref: float = option(1.0, "reference loss weight", nonnegative_float)
    lambda_gm: float = option(1.0, "gradient matching weight", nonnegative_float)
    match_stages: int = option(2, "last encoder stages whose gradients are matched",
                               positive_int)

    def __post_init__(self):
        super().__post_init__()
        require(self.lambda_ref >= 0, "lambda_ref", f"must be >= 0, got {self.lambda_ref}")
        require(self.lambda_gm >= 0, "lambda_gm", f"must be >= 0, got {self.lambda_gm}")
        require(self.match_stages >= 1, "match_stages", f"must be >= 1, got {self.match_stages}")


@dataclass(frozen=True)
class ReferenceData:
    """The labelled images of the reference task."""

    dataset: str
    folder: Path
    case_ids: tuple[str, ...]
    num_classes: int
    batch_dice: bool


def resolve_reference(setup, name: str) -> ReferenceData:
    """Find the reference dataset's labelled images for this configuration.

    Raises:
        InputError: unknown dataset, configuration not planned there, another architecture or
            channel count, or no labelled preprocessed image.
    """
    if name == "self":
        dataset, plans, folder = setup.dataset, setup.plans, setup.folder
        config = setup.config
    else:
        dataset = resolve_dataset_name(name, [setup.paths.preprocessed])
        plans = load_plans(setup.paths, dataset)
        config = plans.configuration(setup.config.name)
        diffs = [f for f in ARCH_FIELDS if _tuple(getattr(config, f)) !=
                 _tuple(getattr(setup.config, f))]
        if plans.num_input_channels != setup.num_input_channels:
            diffs.append("num_input_channels")
        if diffs:
            raise InputError(f"reference dataset {dataset} plans another architecture for "
                             f"'{config.name}' (differs in {', '.join(diffs)}); ReFs shares one "
                             "network between both tasks: use --reference self or a dataset "
                             "planned with the same plans", preprocessed_dir(setup.paths, dataset))
        folder = preprocessed_dir(setup.paths, dataset) / config.data_identifier
    cases = [c for c in list_cases(folder, ("imagesTr",)) if case_paths(folder, c)[1].exists()]
    if not cases:
        raise InputError(f"reference dataset {dataset} has no labelled preprocessed image for "
                         f"'{config.name}'", folder)
    return ReferenceData(dataset, folder, tuple(cases), plans.num_classes, config.batch_dice)


def _tuple(v):
    return tuple(_tuple(x) for x in v) if isinstance(v, (list, tuple)) else v


@register_objective("refs")
class RefsObjective(PretrainObjective):
    """ReFs (see the module docstring). Batches: ``data_view1/2`` (N, C, *patch) unlabelled
    views, ``ref_data`` (N, C, *patch) and ``ref_seg`` (N, 1, *patch) labelled patches."""

    Options = RefsOptions
    default_training = CONTRASTIVE_TRAINING
    min_batch_size = 2

    def __init__(self, network, setup, options: RefsOptions, reference: ReferenceData):
        super().__init__(network, setup, options)
        if options.match_stages > setup.config.num_stages:
            raise OptionError(self.name, "match_stages", f"must be <= "
                              f"{setup.config.num_stages}, the encoder's stages, got "
                              f"{options.match_stages}")
        self.reference = reference
        self.projection = global_head(setup, options)
        self.ssl_loss_fn = NTXentLoss(options.temperature)
        self.ref_loss_fn = DiceCELoss(reference.batch_dice)

    @classmethod
    def create(cls, setup, raw_options: dict | None = None) -> "RefsObjective":
        if setup.distributed:
            raise InputError("objective 'refs' backpropagates through gradients "
                             "(torch.autograd.grad inside the forward pass), which "
                             "DistributedDataParallel does not support; run it without torchrun")
        options = parse_options(cls.name, cls.Options, dict(raw_options or {}))
        reference = resolve_reference(setup, options.reference)
        network = build_network(setup.config, setup.num_input_channels, reference.num_classes,
                                deep_supervision=False, seed=setup.seed)
        objective = cls(network, setup, options, reference)
        objective.set_stage(objective.stages()[0].name)
        return objective

    def matched_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters of the last ``match_stages`` encoder stages."""
        stages = self.network.encoder_stages()[-self.options.match_stages:]
        return [p for stage in stages for p in stage.parameters()]

    def forward(self, batch: dict) -> dict:
        z1, z2 = two_view_embeddings(self.network, self.projection, batch)
        with full_precision(z1):
            l_ssl = self.ssl_loss_fn(z1.float(), z2.float())
        logits = self.network(batch["ref_data"])  # (N, K, *patch)
        l_ref = self.ref_loss_fn(logits, batch["ref_seg"][:, 0].long())  # target (N, *patch)
        loss = l_ssl + self.options.lambda_ref * l_ref
        out = {"ssl_loss": l_ssl.detach(), "ref_loss": l_ref.detach()}
        if self.training and self.options.lambda_gm > 0 and torch.is_grad_enabled():
            params = self.matched_parameters()
            g_ssl = encoder_gradients(l_ssl, params, create_graph=True)
            g_ref = encoder_gradients(l_ref, params, create_graph=True)
            l_gm = gradient_matching_loss(g_ssl, g_ref)
            loss = loss + self.options.lambda_gm * l_gm
            out["gm_loss"] = l_gm.detach()
        out["loss"] = loss
        return out

    def trainable_modules(self) -> tuple[str, ...]:
        net = self.network
        parts = (net.encoder_part, *net.decoder_parts(), net.head_part(0))
        return (*(f"network.{p}" for p in parts), "projection")

    def transferable_prefixes(self) -> tuple[str, ...]:
        return (f"{self.network.encoder_part}.",)

    def hyperparameters(self) -> dict:
        matched = sum(p.numel() for p in self.matched_parameters())
        return {**super().hyperparameters(), "reference_dataset": self.reference.dataset,
                "reference_cases": len(self.reference.case_ids),
                "reference_classes": self.reference.num_classes,
                "matched_parameters": matched,
                "gradient_matching": "1 - cos, double backprop (our reading of Xie et al.)"}

    def make_stream(self, case_ids: Sequence[str], batch_size: int, seed: int, train: bool,
                    num_workers: int, pin: bool) -> BatchStream:
        """``batch_size`` unlabelled patches (two views each) + ``batch_size`` labelled ones."""
        cfg, ref = self.setup.config, self.reference
        patch = tuple(cfg.patch_size)
        views = contrastive_view_transforms((self.options.crop_min, 1.0))
        ssl = patch_stream(self.setup, case_ids, batch_size, seed, views, num_workers, pin)
        read = patch_size_before_augmentation(patch) if train else patch
        loader = PatchDataLoader(ref.folder, list(ref.case_ids), patch, batch_size, cfg.ndim,
                                 REF_OVERSAMPLE, seed + 17, True, read)
        transform = training_transforms(patch, cfg.ndim) if train else validation_transforms()
        labelled = make_loader(loader, transform, num_workers, pin, seed + 17)
        return ZipStream({"": ssl, "ref_": labelled})
