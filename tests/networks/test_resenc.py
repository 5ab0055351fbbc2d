"""Tests for sslunet.networks.resenc: the residual-encoder U-Net of the ResEnc presets.

Network tests use small hand-written plans (:func:`tests.helpers.networks.make_plan`: 2D with
a non-square stride, 3D anisotropic; 8..32 features, 1-3 residual blocks per stage). The
contract tests shared with the plain U-Net (backward, transfer by name, seeds, channels) run
on every registered network in ``test_unet.py``. The last part runs the pretraining
objectives and one pretrain -> fine-tune transfer on a ResEnc-planned copy of the stack
dataset of :mod:`tests.helpers.datasets`.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sslunet.errors import InputError
from sslunet.networks import build_network, get_network
from sslunet.networks.resenc import ResidualBlock, ResidualEncoderUNet
from sslunet.plans import ConfigurationPlan
from sslunet.runs.checkpoint import load_checkpoint
from sslunet.ssl.api import PretrainOptions, pretrain
from sslunet.ssl.objectives import get_objective, list_objectives
from sslunet.training.api import FinetuneOptions, finetune
from tests.helpers.networks import make_plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BLOCKS = (1, 2, 3, 2)


def resenc_plan(ndim: int, **changes) -> ConfigurationPlan:
    """The hand-written plan with this network: features 8, 16, 32, 32 (the last stage strides
    without changing channels, as capped deep stages do), 1-3 blocks, one decoder conv."""
    return make_plan(ndim, **{"network": "resenc_unet", "n_conv_per_stage_encoder": BLOCKS,
                              "n_conv_per_stage_decoder": (1, 1, 1), **changes})


PLANS = {"2d": resenc_plan(2), "3d_aniso": resenc_plan(3)}


@pytest.fixture(params=sorted(PLANS))
def plan(request) -> ConfigurationPlan:
    return PLANS[request.param]


def stage_shapes(plan: ConfigurationPlan) -> list[tuple[int, ...]]:
    out, size = [], plan.patch_size
    for stride in plan.pool_op_kernel_sizes:
        size = tuple(p // s for p, s in zip(size, stride))
        out.append(size)
    return out


# --------------------------------------------------------------------------- shapes, contract


@pytest.mark.parametrize("ds", [True, False])
def test_shapes_with_and_without_deep_supervision(plan, ds):
    net = build_network(plan, num_input_channels=2, num_classes=3, deep_supervision=ds)
    assert isinstance(net, ResidualEncoderUNet)
    x = torch.randn(2, 2, *plan.patch_size)
    with torch.no_grad():
        out = net(x)
        logits, enc, dec = net.forward_with_features(x)
    shapes, n = stage_shapes(plan), plan.num_stages
    assert [t.shape for t in enc] == [(2, plan.features_per_stage[i], *shapes[i])
                                      for i in range(n)]
    assert [t.shape for t in dec] == [(2, plan.features_per_stage[i], *shapes[i])
                                      for i in range(n - 1)]
    if ds:
        assert [t.shape for t in out] == [(2, 3, *shapes[i]) for i in range(n - 1)]
        for a, b in zip(out, logits):
            torch.testing.assert_close(a, b)
    else:
        assert isinstance(out, torch.Tensor) and out.shape == (2, 3, *plan.patch_size)
        torch.testing.assert_close(out, logits)


def test_contract_encode_and_decode_to(plan):
    net = build_network(plan, 1, 2)
    x = torch.randn(2, 1, *plan.patch_size)
    with torch.no_grad():
        _, enc, dec = net.forward_with_features(x)
        skips = net.encode(x)
        for a, b in zip(skips, enc):
            torch.testing.assert_close(a, b)
        assert net.num_decoder_levels == plan.num_stages - 1 == len(dec)
        for level in range(net.num_decoder_levels):
            torch.testing.assert_close(net.decode_to(skips, level), dec[level])
    with pytest.raises(ValueError, match="divisible"):
        net.encode(torch.randn(1, 1, *(p + 1 for p in plan.patch_size)))


def test_contract_names_real_modules(plan):
    net = build_network(plan, 3, 2)
    modules = dict(net.named_modules())
    params = dict(net.named_parameters())
    assert modules[net.encoder_part] is net.encoder
    stages = net.encoder_stages()
    assert len(stages) == plan.num_stages and stages[0] is net.encoder.stages[0]
    decoder = net.decoder_parts()
    assert all(p in modules for p in decoder)
    # the whole decoder without heads: every decoder parameter but the segmentation layers
    in_decoder = {k for k in params if k.startswith(tuple(p + "." for p in decoder))}
    assert in_decoder == {k for k in params if k.startswith("decoder.")
                          and not k.startswith(net.task_specific_prefixes)}
    for level in range(net.num_decoder_levels):
        parts = net.decoder_parts([level])
        assert len(parts) == 2 and all(p in modules for p in parts)
        head = modules[net.head_part(level)]
        assert isinstance(head, (nn.Conv2d, nn.Conv3d)) and head.kernel_size == (1,) * plan.ndim
    # the input conv is the stem, and its weight follows the input channels
    stem = modules[net.input_conv_key]
    assert stem is net.encoder.stem.conv and net.input_conv_key == "encoder.stem.conv"
    assert params[f"{net.input_conv_key}.weight"].shape[:2] == (plan.features_per_stage[0], 3)
    assert net.task_specific_prefixes == ("decoder.seg_layers.",)


def test_layer_configuration(plan):
    net = build_network(plan, 1, 2)
    conv_t = nn.Conv2d if plan.ndim == 2 else nn.Conv3d
    ones = (1,) * plan.ndim
    f = plan.features_per_stage
    stem = net.encoder.stem
    assert stem.conv.kernel_size == plan.conv_kernel_sizes[0] and stem.conv.stride == ones
    assert stem.conv.out_channels == f[0] and isinstance(stem.nonlin, nn.LeakyReLU)
    channels = f[0]
    for i, stage in enumerate(net.encoder.stages):
        assert len(stage) == plan.n_conv_per_stage_encoder[i]
        for j, block in enumerate(stage):
            assert isinstance(block, ResidualBlock)
            stride = plan.pool_op_kernel_sizes[i] if j == 0 else ones
            c_in = channels if j == 0 else f[i]
            assert type(block.conv1.conv) is conv_t
            assert block.conv1.conv.stride == stride and block.conv2.conv.stride == ones
            assert block.conv1.conv.in_channels == c_in and block.conv2.conv.out_channels == f[i]
            for conv in (block.conv1.conv, block.conv2.conv):
                assert conv.kernel_size == plan.conv_kernel_sizes[i] and conv.bias is not None
            assert isinstance(block.conv1.nonlin, nn.LeakyReLU)
            assert isinstance(block.conv2.nonlin, nn.Identity)  # LeakyReLU only after the sum
            assert block.nonlin.negative_slope == 0.01
            skip = dict(block.skip.named_children())
            assert ("pool" in skip) == (stride != ones)
            assert ("proj" in skip) == (c_in != f[i])
            if "pool" in skip:
                assert skip["pool"].kernel_size == stride == skip["pool"].stride
            if "proj" in skip:
                assert skip["proj"].conv.kernel_size == ones and skip["proj"].conv.bias is None
            if not skip:
                assert isinstance(block.skip, nn.Identity)
        channels = f[i]
    # the deepest stage strides at unchanged channels (32 -> 32): pooling-only skip
    assert dict(net.encoder.stages[3][0].skip.named_children()).keys() == {"pool"}
    # the decoder is the plain U-Net's, with the plan's conv counts
    for s, stage in enumerate(net.decoder.stages):
        assert len(stage) == plan.n_conv_per_stage_decoder[plan.num_stages - 2 - s]


# --------------------------------------------------------------------------- the residual block


def naive_instance_norm(y: torch.Tensor, weight, bias, eps: float = 1e-5) -> torch.Tensor:
    axes = tuple(range(2, y.dim()))
    mean = y.mean(dim=axes, keepdim=True)
    var = y.var(dim=axes, unbiased=False, keepdim=True)
    shape = (1, -1) + (1,) * len(axes)
    return (y - mean) / torch.sqrt(var + eps) * weight.view(shape) + bias.view(shape)


def naive_avg_pool(x: torch.Tensor, stride) -> torch.Tensor:
    """Mean over non-overlapping ``stride`` windows, by reshaping: (B, C, *S) -> (B, C, *S/s)."""
    b, c, *size = x.shape
    split = [v for n, s in zip(size, stride) for v in (n // s, s)]
    x = x.reshape(b, c, *split)
    return x.mean(dim=tuple(3 + 2 * a for a in range(len(size))))


def naive_block(block: ResidualBlock, x: torch.Tensor, stride) -> torch.Tensor:
    """nnU-Net's BasicBlockD written from its definition with the block's parameters."""
    conv = F.conv2d if x.dim() == 4 else F.conv3d

    def conv_norm(cb, h, s):
        w = cb.conv.weight
        pad = tuple(k // 2 for k in w.shape[2:])
        h = conv(h, w, cb.conv.bias, stride=s, padding=pad)
        return naive_instance_norm(h, cb.norm.weight, cb.norm.bias)

    def leaky(h):
        return torch.where(h > 0, h, 0.01 * h)

    branch = conv_norm(block.conv2, leaky(conv_norm(block.conv1, x, stride)), 1)
    skip = x
    if any(s > 1 for s in stride):
        skip = naive_avg_pool(skip, stride)
    if hasattr(block.skip, "proj"):
        skip = conv_norm(block.skip.proj, skip, 1)
    return leaky(branch + skip)


@pytest.mark.parametrize("ndim, c_in, c_out, stride, skip", [
    (2, 6, 6, (1, 1), set()),
    (2, 6, 10, (1, 1), {"proj"}),
    (2, 6, 6, (2, 1), {"pool"}),
    (2, 6, 10, (2, 2), {"pool", "proj"}),
    (3, 4, 4, (1, 2, 2), {"pool"}),
    (3, 4, 8, (2, 2, 2), {"pool", "proj"}),
])
def test_residual_block_matches_naive_reference(ndim, c_in, c_out, stride, skip):
    kernel = (1, 3, 3) if ndim == 3 else (3, 3)
    block = ResidualBlock(ndim, c_in, c_out, kernel, stride).double()
    assert set(dict(block.skip.named_children())) == skip
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # every parameter random, norms included (no zero-init here)
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
    x = torch.randn(2, c_in, *((4, 8, 12) if ndim == 3 else (8, 12)), generator=gen,
                    dtype=torch.float64)
    with torch.no_grad():
        got = block(x)
    expected = naive_block(block, x, stride)
    assert got.shape == (2, c_out, *(n // s for n, s in zip(x.shape[2:], stride)))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_fresh_blocks_start_as_their_skip(plan):
    """nnU-Net's init: the residual branch's last norm is zero, so each block initially computes
    LeakyReLU(skip(x)); convs are He-initialised with zero biases."""
    net = build_network(plan, 1, 2, seed=3)
    blocks = [m for m in net.modules() if isinstance(m, ResidualBlock)]
    assert len(blocks) == sum(BLOCKS)
    for block in blocks:
        norm = block.conv2.norm
        assert not norm.weight.any() and not norm.bias.any()
        assert torch.equal(block.conv1.norm.weight, torch.ones_like(block.conv1.norm.weight))
        x = torch.randn(1, block.conv1.conv.in_channels, *plan.patch_size)
        with torch.no_grad():
            torch.testing.assert_close(block(x), F.leaky_relu(block.skip(x), 0.01))
    for name, m in net.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)) \
                and m.bias is not None:
            assert not m.bias.any(), name
    w = net.encoder.stages[2][2].conv1.conv.weight  # 32 x 32 x 3 x 3(x 3) weights
    expected = math.sqrt(2.0 / (1 + 1e-4) / math.prod(w.shape[1:]))
    assert abs(w.std().item() / expected - 1) < 0.05


def test_seeded_init_is_deterministic_and_leaves_global_rng(plan):
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = build_network(plan, 1, 2, seed=7).state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)
    b = build_network(plan, 1, 2, seed=7).state_dict()
    c = build_network(plan, 1, 2, seed=8).state_dict()
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["encoder.stem.conv.weight"], c["encoder.stem.conv.weight"])


def test_registered_and_inconsistent_plan_names_the_network():
    assert get_network("resenc_unet") is ResidualEncoderUNet

    with pytest.raises(InputError, match="cannot build resenc_unet.*n_conv_per_stage_encoder"):
        build_network(resenc_plan(2, n_conv_per_stage_encoder=(1, 2, 3)), 1, 2)


# --------------------------------------------------------------------------- objectives, transfer


@pytest.fixture(scope="module")
def resenc_stack(tmp_path_factory):
    """``(paths, plans)``: the stack dataset planned with ``--preset resenc_m`` and shrunk to 3
    stages of 4/8/16 features with 1, 2, 2 residual blocks (2d and 3d_fullres)."""
    from tests.helpers.datasets import build_stack_home

    home = tmp_path_factory.mktemp("resenc_stack") / "home"
    return build_stack_home(home, preset="resenc_m", n_conv_encoder=(1, 2, 2))


def _objectives() -> list[str]:
    return list_objectives()


@pytest.mark.parametrize("objective", _objectives())
def test_every_objective_trains_the_residual_encoder(resenc_stack, objective):
    """One step of every objective and stage (2d) through the network contract alone."""
    from tests.helpers.pretraining import first_batch, make_setup

    paths, plans = resenc_stack
    assert plans.plans_name == "sslunetResEncMPlans"
    assert plans.configurations["2d"].network == "resenc_unet"
    obj = get_objective(objective).create(make_setup(paths, plans, "2d"))
    assert isinstance(obj.network, ResidualEncoderUNet)
    for stage in obj.stages():
        obj.set_stage(stage.name)
        obj.zero_grad(set_to_none=True)
        out = obj(first_batch(obj))
        assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
        out["loss"].backward()
        with_grad = {n for n, p in obj.named_parameters()
                     if p.grad is not None and p.grad.abs().sum() > 0}
        for module in obj.trainable_modules():
            assert any(n.startswith(module + ".") for n in with_grad), (stage.name, module)
        if "network.encoder" in obj.trainable_modules():  # the stem learns too
            assert "network.encoder.stem.conv.weight" in with_grad
    assert "encoder." in obj.transferable_prefixes()


@pytest.mark.slow
def test_mae_pretraining_transfers_the_residual_encoder_to_finetuning(resenc_stack):
    """Pretrain MAE for 2 iterations on a ResEnc plan, fine-tune from it for one: the transfer
    report lists the stem, every residual block (skip projections included) and the decoder
    blocks MAE trained as loaded, the segmentation heads as not loaded."""
    paths, plans = resenc_stack
    run = dict(epochs=1, iters_per_epoch=2, val_iters=1, batch_size=4, num_workers=0)
    run_dir = pretrain(paths, PretrainOptions(plans.dataset_name, "mae", "2d", device="cpu",
                                              seed=0, overrides=run))
    ckpt = load_checkpoint(run_dir / "checkpoint_final.pt")
    assert ckpt["plans"]["configurations"]["2d"]["network"] == "resenc_unet"
    ft_dir = finetune(paths, FinetuneOptions(
        plans.dataset_name, "2d", 0, "mae", seed=1, device="cpu", validate=False,
        overrides={**run, "iters_per_epoch": 1, "batch_size": 2}))
    report = json.loads((ft_dir / "loaded_weights.json").read_text())
    assert report["objective"] == "mae" and report["adapted_input_channels"] == []
    loaded, source = set(report["loaded"]), ckpt["network_weights"]
    encoder = {k for k in source if k.startswith("encoder.")}
    assert encoder <= loaded
    for key in ("encoder.stem.conv.weight", "encoder.stages.0.0.conv1.conv.weight",
                "encoder.stages.1.0.skip.proj.conv.weight",
                "encoder.stages.2.1.conv2.norm.weight"):
        assert key in loaded, key
    assert any(k.startswith("decoder.stages.") for k in loaded)
    assert any(k.startswith("decoder.transpconvs.") for k in loaded)
    assert set(report["not_loaded"]) == {k for k in source if k.startswith("decoder.seg_layers.")}
    assert (ft_dir / "checkpoint_final.pt").is_file()
