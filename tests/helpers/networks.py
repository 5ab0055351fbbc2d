"""Small hand-written configuration plans for the network tests."""

from __future__ import annotations

import dataclasses

from sslunet.plans import ConfigurationPlan


def make_plan(ndim: int, network: str = "plain_unet", **changes) -> ConfigurationPlan:
    """A small hand-written plan: 2D with a non-square stride, or 3D anisotropic."""
    if ndim == 2:
        topology = dict(
            patch_size=(32, 24),
            pool_op_kernel_sizes=((1, 1), (2, 2), (2, 2), (2, 1)),
            conv_kernel_sizes=((3, 3), (3, 3), (3, 3), (3, 3)),
            spacing=(1.0, 1.0),
        )
    else:
        topology = dict(
            patch_size=(8, 32, 32),
            pool_op_kernel_sizes=((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2)),
            conv_kernel_sizes=((1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)),
            spacing=(3.0, 1.0, 1.0),
        )
    plan = ConfigurationPlan(
        name=f"{ndim}d_test",
        data_identifier="test",
        median_image_size=topology["patch_size"],
        batch_size=2,
        features_per_stage=(8, 16, 32, 32),
        n_conv_per_stage_encoder=(2, 2, 2, 2),
        n_conv_per_stage_decoder=(2, 2, 2),
        normalization_schemes=("zscore",),
        use_mask_for_norm=(False,),
        batch_dice=True,
        network=network,
        **topology,
    )
    return dataclasses.replace(plan, **changes)
