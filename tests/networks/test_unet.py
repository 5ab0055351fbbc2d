"""Tests for sslunet.networks.unet: the plan-built U-Net, and the VRAM proxy counted on it.

The contract tests (fixture ``plan``) run on every registered network; those about the plain
U-Net's layers and count (fixture ``plain_plan``) on it alone (the residual-encoder U-Net's are
in ``test_resenc.py``)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from sslunet.errors import InputError
from sslunet.networks import (
    build_network,
    get_network,
    list_networks,
)
from sslunet.plans import ConfigurationPlan
from tests.helpers.feature_maps import conv_feature_map_size
from tests.helpers.networks import make_plan


def cumulative_strides(plan: ConfigurationPlan) -> list[tuple[int, ...]]:
    out, current = [], (1,) * plan.ndim
    for stride in plan.pool_op_kernel_sizes:
        current = tuple(c * s for c, s in zip(current, stride))
        out.append(current)
    return out


def stage_shapes(plan: ConfigurationPlan) -> list[tuple[int, ...]]:
    return [tuple(p // c for p, c in zip(plan.patch_size, cs)) for cs in cumulative_strides(plan)]


PLANS = {"2d": make_plan(2), "3d_aniso": make_plan(3)}
CASES = [(name, key) for name in list_networks() for key in PLANS]
CASE_IDS = [f"{name}-{key}" for name, key in CASES]


@pytest.fixture(params=CASES, ids=CASE_IDS)
def plan(request) -> ConfigurationPlan:
    name, key = request.param
    return dataclasses.replace(PLANS[key], network=name)


@pytest.fixture(params=sorted(PLANS))
def plain_plan(request) -> ConfigurationPlan:
    return PLANS[request.param]


def test_deep_supervision_outputs_and_features(plan):
    torch.manual_seed(0)
    net = build_network(plan, num_input_channels=2, num_classes=3, deep_supervision=True)
    x = torch.randn(2, 2, *plan.patch_size)
    logits, enc, dec = net.forward_with_features(x)
    shapes = stage_shapes(plan)
    n = plan.num_stages
    assert len(enc) == n and len(dec) == n - 1 and len(logits) == n - 1
    for i in range(n):
        assert enc[i].shape == (2, plan.features_per_stage[i], *shapes[i])
    for i in range(n - 1):
        assert dec[i].shape == (2, plan.features_per_stage[i], *shapes[i])
        assert logits[i].shape == (2, 3, *shapes[i])
    # forward() and the decoder called directly agree with forward_with_features
    for a, b in zip(net(x), logits):
        torch.testing.assert_close(a, b)
    _, feats = net.decoder(net.encoder(x), return_features=True)
    torch.testing.assert_close(feats[0], dec[0])


def test_deep_supervision_switch(plan):
    net = build_network(plan, 1, 4, deep_supervision=True)
    x = torch.randn(1, 1, *plan.patch_size)
    with torch.no_grad():
        all_outputs = net(x)
        net.set_deep_supervision(False)
        assert net.deep_supervision is False
        single = net(x)
        logits, features = net.decoder(net.encoder(x), return_features=True)
    assert isinstance(single, torch.Tensor)
    assert single.shape == (1, 4, *plan.patch_size)
    torch.testing.assert_close(single, all_outputs[0])
    torch.testing.assert_close(logits, single)
    assert len(features) == plan.num_stages - 1
    net.deep_supervision = True
    assert isinstance(net(x), list)


def test_backward_reaches_every_parameter(plan):
    net = build_network(plan, 1, 2)
    # A residual encoder zero-initialises the last norm of each residual branch (blocks start
    # as their skip), which by design stops the gradient to the branch at step 0; give those
    # norms weight 1 so that the test checks what it is about: every parameter is in the graph.
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("norm.weight") and not p.any():
                p.fill_(1.0)
    out = net(torch.randn(2, 1, *plan.patch_size))
    sum(o.square().mean() for o in out).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_parameter_names_and_transfer_by_name(plan):
    net1 = build_network(plan, 1, 3, seed=1)
    net2 = build_network(plan, 1, 3, seed=2)
    names = [n for n, _ in net1.named_parameters()]
    assert all(n.startswith(("encoder.", "decoder.")) for n in names)
    assert {k: v.shape for k, v in net1.state_dict().items()} == {
        k: v.shape for k, v in net2.state_dict().items()}
    x = torch.randn(1, 1, *plan.patch_size)
    with torch.no_grad():
        assert not torch.allclose(net1(x)[0], net2(x)[0])
        net2.load_state_dict(net1.state_dict())
        torch.testing.assert_close(net1(x)[0], net2(x)[0])


def test_same_seed_same_weights_and_global_rng_untouched(plan):
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = build_network(plan, 1, 2, seed=7).state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)
    b = build_network(plan, 1, 2, seed=7).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_num_classes_only_changes_seg_layers(plan):
    two = build_network(plan, 1, 2).state_dict()
    five = build_network(plan, 1, 5).state_dict()
    assert two.keys() == five.keys()
    changed = {k for k in two if two[k].shape != five[k].shape}
    assert changed == {k for k in two if k.startswith("decoder.seg_layers.")}
    assert all(k.startswith(get_network(plan.network).task_specific_prefixes) for k in changed)
    # seg layers are 1x1(x1) convs, one per decoder stage
    assert {five[k].shape[2:] for k in changed if k.endswith("weight")} == {(1,) * plan.ndim}
    assert len([k for k in changed if k.endswith("weight")]) == plan.num_stages - 1


def test_input_channels_only_change_the_input_conv(plan):
    one = build_network(plan, 1, 2).state_dict()
    three = build_network(plan, 3, 2).state_dict()
    changed = {k for k in one if one[k].shape != three[k].shape}
    assert changed == {f"{get_network(plan.network).input_conv_key}.weight"}


def test_layer_configuration(plain_plan):
    plan = plain_plan
    net = build_network(plan, 1, 2)
    conv_t = nn.Conv2d if plan.ndim == 2 else nn.Conv3d
    for i, stage in enumerate(net.encoder.stages):
        assert len(stage) == plan.n_conv_per_stage_encoder[i]
        for j, block in enumerate(stage):
            assert type(block.conv) is conv_t
            assert block.conv.kernel_size == plan.conv_kernel_sizes[i]
            assert block.conv.padding == tuple(k // 2 for k in plan.conv_kernel_sizes[i])
            expected = plan.pool_op_kernel_sizes[i] if j == 0 else (1,) * plan.ndim
            assert block.conv.stride == expected
            assert block.conv.bias is not None
            assert block.norm.affine and block.norm.eps == 1e-5
            assert block.nonlin.negative_slope == 0.01
    n = plan.num_stages
    for s, up in enumerate(net.decoder.transpconvs):
        stride = plan.pool_op_kernel_sizes[n - 1 - s]
        assert up.kernel_size == stride and up.stride == stride
        assert up.out_channels == plan.features_per_stage[n - 2 - s]
        assert len(net.decoder.stages[s]) == plan.n_conv_per_stage_decoder[n - 2 - s]
        assert net.decoder.stages[s][0].conv.in_channels == 2 * up.out_channels


def test_he_initialisation():
    net = build_network(make_plan(3), 1, 2, seed=3)
    a = 1e-2
    for name, m in net.named_modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            assert torch.count_nonzero(m.bias) == 0, name
    # a layer with 32*32*27 weights: empirical std within a few % of the He value
    w = net.encoder.stages[3][1].conv.weight
    expected = math.sqrt(2.0 / (1 + a * a) / (w.shape[1] * 27))
    assert abs(w.std().item() / expected - 1) < 0.03
    assert abs(w.mean().item()) < 3 * expected / math.sqrt(w.numel())
    norm = net.encoder.stages[0][0].norm
    assert torch.equal(norm.weight, torch.ones_like(norm.weight))


def naive_feature_map_size(plan: ConfigurationPlan, in_ch: int, n_cls: int, ds: bool) -> int:
    """nnU-Net's count written from the plan alone: channels x voxels of each conv output."""
    shapes = stage_shapes(plan)
    f = plan.features_per_stage
    total = 0
    for i in range(plan.num_stages):
        total += plan.n_conv_per_stage_encoder[i] * f[i] * math.prod(shapes[i])
    for i in range(plan.num_stages - 1):
        voxels = math.prod(shapes[i])
        total += f[i] * voxels  # transposed conv up to stage i
        total += plan.n_conv_per_stage_decoder[i] * f[i] * voxels
        if ds or i == 0:
            total += n_cls * voxels
    return total


@pytest.mark.parametrize("ds", [False, True])
def test_conv_feature_map_size_matches_naive_count(plain_plan, ds):
    assert conv_feature_map_size(plain_plan, 2, 3, deep_supervision=ds) == \
        naive_feature_map_size(plain_plan, 2, 3, ds)


def test_conv_feature_map_size_known_answer():
    # 2 stages, 2D 8x8 patch, features (4, 8), one conv each, stride 2:
    # enc 4*64 + 8*16, transp 4*64, dec conv 4*64, seg 2*64 = 256+128+256+256+128
    plan = make_plan(2, patch_size=(8, 8), pool_op_kernel_sizes=((1, 1), (2, 2)),
                     conv_kernel_sizes=((3, 3), (3, 3)), features_per_stage=(4, 8),
                     n_conv_per_stage_encoder=(1, 1), n_conv_per_stage_decoder=(1,))
    assert conv_feature_map_size(plan, 1, 2) == 1024


def test_conv_feature_map_size_handles_large_patches_without_memory():
    # 3D 128^3 with 32..320 features: instant on the meta device
    plan = make_plan(3, patch_size=(128, 128, 128),
                     pool_op_kernel_sizes=((1, 1, 1),) + ((2, 2, 2),) * 5,
                     conv_kernel_sizes=((3, 3, 3),) * 6,
                     features_per_stage=(32, 64, 128, 256, 320, 320),
                     n_conv_per_stage_encoder=(2,) * 6, n_conv_per_stage_decoder=(2,) * 5)
    assert conv_feature_map_size(plan, 1, 3) == naive_feature_map_size(plan, 1, 3, False)


@pytest.mark.parametrize("changes, message", [
    (dict(n_conv_per_stage_decoder=(2, 2, 2, 2)), "n_conv_per_stage_decoder"),
    (dict(features_per_stage=(8, 16, 32)), "pool_op_kernel_sizes"),
    (dict(conv_kernel_sizes=((3, 3), (3, 3), (2, 2), (3, 3))), "kernels odd"),
    (dict(pool_op_kernel_sizes=((1, 1), (2, 2), (2, 2), (2, 2, 2))), "stage 3"),
    (dict(features_per_stage=(8,), pool_op_kernel_sizes=((1, 1),),
          conv_kernel_sizes=((3, 3),), n_conv_per_stage_encoder=(2,),
          n_conv_per_stage_decoder=()), "at least 2"),
])
def test_inconsistent_plan_raises_input_error(changes, message):
    bad = make_plan(2, **changes)
    with pytest.raises(InputError, match=message) as info:
        build_network(bad, 1, 2)
    assert "2d_test" in str(info.value)


def test_forward_rejects_indivisible_input():
    net = build_network(make_plan(2), 1, 2)
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(1, 1, 30, 24))
