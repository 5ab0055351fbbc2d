"""Training data pipeline: patch sampling, augmentation and background loading."""

from sslunet.data.augmentation import (
    patch_size_before_augmentation,
    spatial_augmentation,
    training_transforms,
    use_dummy_2d,
    validation_transforms,
)
from sslunet.data.loader import BatchStream, make_loader
from sslunet.data.sampling import PatchDataLoader

__all__ = [
    "BatchStream",
    "PatchDataLoader",
    "make_loader",
    "patch_size_before_augmentation",
    "spatial_augmentation",
    "training_transforms",
    "use_dummy_2d",
    "validation_transforms",
]
