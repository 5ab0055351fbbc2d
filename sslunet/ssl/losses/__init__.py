"""Self-supervised objectives as pure functions of tensors (no network, no schedule)."""

from sslunet.ssl.losses.global_contrastive import GlobalDomainContrastiveLoss, pair_masks
from sslunet.ssl.losses.gradient_matching import encoder_gradients, gradient_matching_loss
from sslunet.ssl.losses.local_contrastive import LocalContrastiveLoss, local_pair_masks
from sslunet.ssl.losses.ntxent import NTXentLoss
from sslunet.ssl.losses.reconstruction import MaskedMSELoss, ReconstructionLoss

__all__ = [
    "GlobalDomainContrastiveLoss",
    "LocalContrastiveLoss",
    "MaskedMSELoss",
    "NTXentLoss",
    "ReconstructionLoss",
    "encoder_gradients",
    "gradient_matching_loss",
    "local_pair_masks",
    "pair_masks",
]
