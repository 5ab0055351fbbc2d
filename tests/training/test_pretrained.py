"""Tests for sslunet.training.pretrained: initialising a network from a checkpoint.

Runs use the tiny dataset of :mod:`tests.helpers.datasets` (a few seconds each on 2 CPU cores).
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from sslunet.errors import InputError
from sslunet.networks import PlainConvUNet, build_network
from sslunet.plans import Plans
from sslunet.runs.checkpoint import load_checkpoint
from sslunet.training.pretrained import load_pretrained
from tests.helpers.datasets import DATASET, trained_home


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _trained(tmp_path_factory, tmp_path):
    paths, run_dir = trained_home(tmp_path_factory, tmp_path / "home")
    plans = Plans.load(paths.preprocessed / DATASET / "plans.json")
    path = run_dir / "checkpoint_final.pt"
    return plans, load_checkpoint(path), path


def test_init_from_finetune_checkpoint_loads_all_but_seg_layers(tmp_path_factory, tmp_path):
    plans, ckpt, path = _trained(tmp_path_factory, tmp_path)
    config = plans.configuration("2d")
    net = build_network(config, 1, plans.num_classes, seed=123)
    fresh = {k: v.clone() for k, v in net.state_dict().items()}
    report = load_pretrained(net, ckpt, config, path)
    after, source = net.state_dict(), ckpt["network_weights"]
    seg = [k for k in after if k.startswith("decoder.seg_layers.")]
    assert seg and sorted(report["not_loaded"]) == sorted(seg)
    for k, v in after.items():
        assert torch.equal(v, fresh[k] if k in seg else source[k]), k
    # the trained full-resolution head differs from the fresh one, so it really was skipped
    assert not torch.equal(after["decoder.seg_layers.0.weight"],
                           source["decoder.seg_layers.0.weight"])
    assert any(k.startswith("encoder.") for k in report["loaded"])
    assert any(k.startswith("decoder.stages.") for k in report["loaded"])
    assert report["adapted_input_channels"] == []


def test_init_from_other_configuration_is_refused(tmp_path_factory, tmp_path):
    plans, ckpt, path = _trained(tmp_path_factory, tmp_path)
    config = plans.configuration("3d_fullres")
    net = build_network(config, 1, plans.num_classes)
    with pytest.raises(InputError, match="configuration '2d', not '3d_fullres'") as err:
        load_pretrained(net, ckpt, config, path)
    assert "\n" not in str(err.value)


def test_init_with_other_architecture_is_refused(tmp_path_factory, tmp_path):
    plans, ckpt, path = _trained(tmp_path_factory, tmp_path)
    config = plans.configuration("2d")
    wide = config.__class__(**{**config.__dict__, "features_per_stage": (8, 16, 32)})
    net = build_network(wide, 1, plans.num_classes)
    with pytest.raises(InputError, match="features_per_stage"):
        load_pretrained(net, ckpt, wide, path)
    # without plans in the checkpoint the tensor shapes still catch it
    with pytest.raises(InputError, match="has shape") as err:
        load_pretrained(net, {**ckpt, "plans": {}}, wide, path)
    assert "\n" not in str(err.value)


STEM = f"{PlainConvUNet.input_conv_key}.weight"  # the one tensor whose shape follows the channels


@pytest.mark.parametrize("n_old,n_new", [(1, 2), (2, 3)])
def test_init_adapts_input_channels(tmp_path_factory, tmp_path, n_old, n_new):
    plans, ckpt, path = _trained(tmp_path_factory, tmp_path)
    config = plans.configuration("2d")
    if n_old != 1:  # a checkpoint of a network with n_old input channels
        src = build_network(config, n_old, plans.num_classes, seed=5)
        ckpt = {**ckpt, "network_weights": src.state_dict()}
    old = ckpt["network_weights"][STEM]
    net = build_network(config, n_new, plans.num_classes, seed=9)
    report = load_pretrained(net, ckpt, config, path)
    new = net.state_dict()[STEM]
    assert report["adapted_input_channels"] == [STEM]
    assert new.shape == (old.shape[0], n_new, *old.shape[2:])
    for o, i in itertools.product(range(old.shape[0]), range(n_new)):
        expected = sum(old[o, j] for j in range(n_old)) / n_old / n_new
        assert torch.allclose(new[o, i], expected, atol=1e-7)
    # the point of the rule: a constant image gives the stem the same response as a
    # 1-channel checkpoint did (with n_old channels, 1/n_old of it: the mean is taken)
    const_old, const_new = torch.full((1, n_old, 5, 5), 2.0), torch.full((1, n_new, 5, 5), 2.0)
    assert torch.allclose(F.conv2d(const_old, old) / n_old, F.conv2d(const_new, new), atol=1e-5)
