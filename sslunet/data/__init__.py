"""Training data pipeline: patch sampling, augmentation and background loading."""

from sslunet.data.augmentation import (
    contrastive_view_transforms,
    intensity_only_two_views,
    make_two_views,
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
    "contrastive_view_transforms",
    "intensity_only_two_views",
    "make_loader",
    "make_two_views",
    "patch_size_before_augmentation",
    "spatial_augmentation",
    "training_transforms",
    "use_dummy_2d",
    "validation_transforms",
]
