"""Tests for sslunet.inference.predictor: how a plan and a device become an inference setup."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from sslunet.inference.predictor import CPU_TILE_VOXELS, inference_config, tile_batch_size
from tests.helpers.networks import make_plan


def test_tile_batches_follow_the_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for ndim in (2, 3):
        plan = make_plan(ndim)
        on_cpu, on_gpu = inference_config(plan, device=cpu), inference_config(plan, device=cuda)
        voxels = int(np.prod(plan.patch_size))
        assert on_cpu.tile_batch_size == max(1, CPU_TILE_VOXELS // voxels)
        assert on_gpu.tile_batch_size == plan.batch_size
        assert on_gpu.batch_mirrors and not on_cpu.batch_mirrors
        assert on_cpu.mirror_axes == tuple(range(ndim))
    # measured on a CPU: 2 tiles of 256x256 per call, one 3d tile
    assert tile_batch_size(dataclasses.replace(make_plan(2), patch_size=(256, 256)), cpu) == 2
    assert tile_batch_size(dataclasses.replace(make_plan(3), patch_size=(12, 256, 256)), cpu) == 1
