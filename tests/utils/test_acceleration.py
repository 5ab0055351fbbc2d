"""The GPU fast-path switches on CPU: they change how a network computes, not what."""

from __future__ import annotations

import json

import pytest
import torch

from sslunet.cli import finetune as finetune_cli
from sslunet.cli import predict as predict_cli
from sslunet.cli import study as study_cli
from sslunet.cli._training_flags import training_overrides
from sslunet.inference.predictor import network_predictor
from sslunet.networks import build_network
from sslunet.study.api import StudyOptions
from sslunet.training.api import FinetuneOptions, finetune
from sslunet.training.config import TrainingConfig
from sslunet.training.segmentation import SegmentationModel
from sslunet.training.trainer import Trainer
from sslunet.utils import acceleration
from sslunet.utils.acceleration import (
    accelerate,
    autocast_dtype,
    spatial_dims,
    wants_compile,
)
from tests.helpers.datasets import DATASET, tiny_home, tiny_overrides
from tests.helpers.networks import make_plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _network_and_input(ndim: int):
    plan = make_plan(ndim)
    net = build_network(plan, 1, 3, deep_supervision=False, seed=0).eval()
    x = torch.randn(2, 1, *plan.patch_size, generator=torch.Generator().manual_seed(0))
    return net, x


def test_compile_modes():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not wants_compile("auto", cpu) and wants_compile("auto", cuda)
    assert wants_compile("on", cpu) and not wants_compile("off", cuda)
    with pytest.raises(ValueError):
        wants_compile("fast", cpu)
    with pytest.raises(ValueError, match="--compile"):
        TrainingConfig(compile="fast")


@pytest.mark.parametrize("ndim", [2, 3])
def test_channels_last_gives_the_same_outputs_and_state_dict(ndim):
    net, x = _network_and_input(ndim)
    with torch.no_grad():
        expected = net(x)
    names = list(net.state_dict())
    accelerate(net, torch.device("cpu"), "off", channels_last=True)
    assert spatial_dims(net) == ndim
    conv = next(m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)))
    fmt = torch.channels_last if ndim == 2 else torch.channels_last_3d
    assert conv.weight.is_contiguous(memory_format=fmt)
    with torch.no_grad():
        got = net(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert list(net.state_dict()) == names


def test_a_failing_compilation_falls_back_to_eager_once_with_a_warning(monkeypatch):
    net, x = _network_and_input(2)
    with torch.no_grad():
        expected = net(x)

    def broken_compile(fn):
        def run(*args, **kwargs):
            raise RuntimeError("backend compiler failed\nlong trace")
        return run

    monkeypatch.setattr(acceleration.torch, "compile", broken_compile)
    warnings = []
    accelerate(net, torch.device("cpu"), "on", warn=warnings.append)
    with torch.no_grad():
        first, second = net(x), net(x)
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(second, expected)
    assert len(warnings) == 1 and "backend compiler failed" in warnings[0]
    assert "long trace" not in warnings[0]


@pytest.mark.slow
def test_compiled_network_gives_the_same_outputs():
    """A real torch.compile (inductor, a C++ compiler on CPU): same outputs as eager, or the
    eager fallback when this machine cannot compile (then the warning says why)."""
    net, x = _network_and_input(2)
    with torch.no_grad():
        expected = net(x)
    warnings = []
    accelerate(net, torch.device("cpu"), "on", warn=warnings.append)
    with torch.no_grad():
        got = net(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert list(net.state_dict()) == list(build_network(make_plan(2), 1, 3,
                                                        deep_supervision=False).state_dict())


def test_switches_reach_training_runs_and_the_command_lines(tmp_path_factory, tmp_path):
    paths = tiny_home(tmp_path_factory, tmp_path / "home")
    run_dir = finetune(paths, FinetuneOptions(DATASET, "2d", validate=False,
                                              overrides=tiny_overrides(channels_last=True,
                                                                       compile="off")))
    recorded = json.loads((run_dir / "run_config.json").read_text())["training"]
    assert recorded["channels_last"] is True and recorded["compile"] == "off"
    args = finetune_cli.build_parser().parse_args(["-d", "x", "--compile", "on",
                                                   "--channels-last"])
    assert training_overrides(args) == {"compile": "on", "channels_last": True}
    assert training_overrides(finetune_cli.build_parser().parse_args(["-d", "x"])) == {}
    args = study_cli.build_parser().parse_args(["-d", "x", "--compile", "on", "--channels-last"])
    assert training_overrides(args) == {"compile": "on", "channels_last": True}
    args = predict_cli.build_parser().parse_args(["-i", "a", "-o", "b", "--compile", "auto"])
    assert args.compile == "auto" and not args.channels_last


def test_mixed_precision_is_bf16_only_on_cpus_with_native_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(acceleration, "cpu_has_native_bf16", lambda: True)
    assert autocast_dtype(cpu) == torch.bfloat16
    assert autocast_dtype(cpu, training=False) == torch.bfloat16
    assert autocast_dtype(cpu, enabled=False) is None
    # 3d networks train in fp32 on a CPU (a oneDNN crash in bf16 Conv3d backward); they
    # still predict in bf16
    assert autocast_dtype(cpu, spatial_dims=3) is None
    assert autocast_dtype(cpu, training=False, spatial_dims=3) == torch.bfloat16
    monkeypatch.setattr(acceleration, "cpu_has_native_bf16", lambda: False)
    assert autocast_dtype(cpu) is None and autocast_dtype(cpu, training=False) is None
    # on CUDA prediction is fp16 as in nnU-Net v2, whatever the GPU
    assert autocast_dtype(torch.device("cuda"), training=False) == torch.float16
    assert autocast_dtype(torch.device("cuda"), training=False, spatial_dims=3) == torch.float16


@pytest.mark.parametrize("ndim, expected", [(2, torch.bfloat16), (3, None)])
def test_trainer_picks_the_precision_of_its_network(monkeypatch, tmp_path, ndim, expected):
    monkeypatch.setattr(acceleration, "cpu_has_native_bf16", lambda: True)
    net = build_network(make_plan(ndim), 1, 3, deep_supervision=True, seed=0)
    trainer = Trainer(TrainingConfig(num_workers=0), SegmentationModel(net, batch_dice=False),
                      None, tmp_path, torch.device("cpu"), progress=False)
    assert trainer.amp_dtype == expected


@pytest.mark.parametrize("ndim", [2, 3])
def test_bf16_prediction_on_cpu_keeps_the_fp32_masks(monkeypatch, ndim):
    """bf16 rounding moves logits a little; the argmax may flip only where classes nearly tie
    (the same tie rule as the nnU-Net export check: margin below the bf16 error)."""
    net, x = _network_and_input(ndim)
    monkeypatch.setattr(acceleration, "cpu_has_native_bf16", lambda: False)
    fp32 = network_predictor(net, torch.device("cpu"))(x)
    monkeypatch.setattr(acceleration, "cpu_has_native_bf16", lambda: True)
    bf16 = network_predictor(net, torch.device("cpu"))(x)
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    assert not torch.equal(bf16, fp32)  # bf16 really ran
    scale = fp32.abs().max()
    assert (bf16 - fp32).abs().max() < 0.05 * scale
    top2 = fp32.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 0.05 * scale  # (B, *spatial)
    assert torch.equal(bf16.argmax(1)[clear], fp32.argmax(1)[clear])
    assert clear.float().mean() > 0.5


def test_no_amp_reaches_prediction_training_and_studies():
    args = predict_cli.build_parser().parse_args(["-i", "a", "-o", "b", "--no-amp"])
    assert args.no_amp
    assert not predict_cli.build_parser().parse_args(["-i", "a", "-o", "b"]).no_amp
    args = finetune_cli.build_parser().parse_args(["-d", "x", "--no-amp"])
    assert training_overrides(args) == {"amp": False}
    args = study_cli.build_parser().parse_args(["-d", "x", "--no-amp"])
    assert training_overrides(args) == {"amp": False}
    assert StudyOptions("x", finetune_overrides=training_overrides(args)
                        ).finetune_overrides.amp is False


def test_study_passes_engine_flags_to_finetuning_and_pretraining(monkeypatch, tmp_path):
    seen = {}

    def fake_run_study(paths, opts):
        seen["opts"] = opts
        (tmp_path / "study.md").write_text("")
        return tmp_path

    monkeypatch.setattr(study_cli, "run_study", fake_run_study)
    monkeypatch.setattr(study_cli, "resolve_dataset_name", lambda name, roots: name)
    monkeypatch.setenv("SSLUNET_HOME", str(tmp_path))
    study_cli.main(["-d", "x", "--compile", "on", "--channels-last", "--no-amp"])
    opts = seen["opts"]
    assert opts.finetune_overrides.compile == "on" and opts.finetune_overrides.channels_last
    assert opts.pretrain_overrides.compile == "on" and opts.pretrain_overrides.channels_last
    assert opts.pretrain_overrides.amp is False


class _FailsBackward(torch.autograd.Function):
    """Identity whose backward raises, as a compiler failure at the first backward call."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("backend compiler failed\nlong details")


def _trainer_with_compiled(tmp_path, compiled):
    """A trainer whose network forward is ``compiled(eager)`` behind the eager fallback, and a
    batch for it."""
    plan = make_plan(2)
    net = build_network(plan, 1, 3, deep_supervision=False, seed=0)
    trainer = Trainer(TrainingConfig(num_workers=0, amp=False), SegmentationModel(net, False),
                      None, tmp_path, torch.device("cpu"), progress=False)
    eager = net.forward
    net.forward = acceleration._EagerFallback(eager, compiled(eager), trainer.log.log)
    g = torch.Generator().manual_seed(0)
    batch = {"data": torch.randn(2, 1, *plan.patch_size, generator=g),
             "seg": torch.randint(0, 3, (2, 1, *plan.patch_size), generator=g)}
    return trainer, net, batch


def test_a_compiler_failure_in_the_backward_pass_falls_back_and_redoes_the_step(tmp_path):
    trainer, net, batch = _trainer_with_compiled(
        tmp_path, lambda eager: lambda x: _FailsBackward.apply(eager(x)))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loss = trainer.train_step(batch, 0, 10)
    assert acceleration.compiled_forward(net).failed and loss > 0
    assert any(not torch.equal(v, before[k]) for k, v in net.state_dict().items())  # it stepped
    assert "torch.compile failed (RuntimeError: backend compiler failed)" in (
        trainer.log.log_path).read_text()
    trainer.train_step(batch, 1, 10)  # eager from now on


def test_a_failure_after_a_good_step_is_not_taken_for_a_compiler_failure(tmp_path):
    trainer, net, batch = _trainer_with_compiled(tmp_path, lambda eager: eager)
    trainer.train_step(batch, 0, 10)
    with pytest.raises(KeyError):
        trainer.train_step({"data": batch["data"]}, 1, 10)  # a real error still stops the run
    assert not acceleration.compiled_forward(net).failed
