"""Tests for sslunet.runs.nnunet: nnU-Net v2 checkpoints (made by nnU-Net's own network code,
tests/helpers/make_nnunet_fixtures.py) load into our networks and give nnU-Net's outputs."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from sslunet.errors import InputError
from sslunet.networks import build_network
from sslunet.runs.layout import is_checkpoint_path
from sslunet.runs.nnunet import (
    export_for_nnunet, load_init_checkpoint, load_nnunet_checkpoint, sslunet_name,
)
from sslunet.training.pretrained import load_pretrained
from tests.helpers.networks import make_plan

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ARCH = dict(name="2d", patch_size=(32, 32), pool_op_kernel_sizes=((1, 1), (2, 2), (2, 2)),
            conv_kernel_sizes=((3, 3),) * 3, features_per_stage=(4, 8, 16))
NETWORKS = {"plain": dict(network="plain_unet", n_conv_per_stage_encoder=(2, 2, 2),
                          n_conv_per_stage_decoder=(2, 2)),
            "resenc": dict(network="resenc_unet", n_conv_per_stage_encoder=(1, 2, 2),
                           n_conv_per_stage_decoder=(1, 1))}


def _plan(kind: str):
    return make_plan(2, **ARCH, **NETWORKS[kind])


@pytest.mark.parametrize("kind", ["plain", "resenc"])
def test_nnunet_weights_give_nnunets_outputs(kind):
    ckpt = load_nnunet_checkpoint(FIXTURES / f"nnunet_{kind}.pth")
    net = build_network(_plan(kind), 1, 3, deep_supervision=False)
    net.load_state_dict(ckpt["network_weights"])  # strict: every name mapped, none left over
    io = torch.load(FIXTURES / f"nnunet_{kind}_io.pt", weights_only=True)
    with torch.no_grad():
        out = net.eval()(io["input"])
    torch.testing.assert_close(out, io["output"], atol=1e-5, rtol=1e-5)
    assert ckpt["configuration"] == "2d" and "nnUNetTrainer" in ckpt["objective"]["name"]


@pytest.mark.parametrize("kind", ["plain", "resenc"])
def test_init_from_nnunet_transfers_everything_but_the_heads(kind, tmp_path):
    path = FIXTURES / f"nnunet_{kind}.pth"
    assert is_checkpoint_path(path.name)  # "--init model.pth" is a file, not an objective
    net = build_network(_plan(kind), 1, 3)
    report = load_pretrained(net, load_init_checkpoint(path), _plan(kind), path)
    assert report["not_loaded"] and all(k.startswith("decoder.seg_layers.")
                                         for k in report["not_loaded"])
    assert any(k.startswith("encoder.") for k in report["loaded"])


def test_duplicates_dropped_and_names_mapped():
    assert sslunet_name("encoder.stages.2.0.convs.1.norm.weight") == "encoder.stages.2.1.norm.weight"
    assert sslunet_name("encoder.stages.1.0.convs.0.all_modules.0.weight") is None
    assert sslunet_name("decoder.encoder.stages.0.0.convs.0.conv.weight") is None
    assert sslunet_name("encoder.stages.1.blocks.0.skip.1.conv.weight") == \
        "encoder.stages.1.0.skip.proj.conv.weight"
    assert sslunet_name("decoder.seg_layers.1.bias") == "decoder.seg_layers.1.bias"


class Payload:
    """Unpickling this would run code of ours: a checkpoint holding it must be refused."""

    def __reduce__(self):
        return (print, ("executed",))


def test_anything_but_plain_data_is_refused_unread(tmp_path, capsys):
    bad = tmp_path / "evil.pth"
    torch.save({"network_weights": {"w": torch.zeros(1)}, "x": Payload()}, bad)
    with pytest.raises(InputError, match="builtins.print"):
        load_nnunet_checkpoint(bad)
    assert "executed" not in capsys.readouterr().out
    (tmp_path / "junk.pth").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(InputError, match="cannot read"):
        load_nnunet_checkpoint(tmp_path / "junk.pth")
    torch.save({"weights": {}}, tmp_path / "other.pth")
    with pytest.raises(InputError, match="no network_weights"):
        load_nnunet_checkpoint(tmp_path / "other.pth")


@pytest.mark.parametrize("kind", ["plain", "resenc"])
def test_export_gives_back_nnunets_own_state_dict(kind, tmp_path):
    """nnU-Net -> ours -> nnU-Net names: every name nnU-Net stores (duplicates included), the
    same tensors; so ``nnUNetv2_train -pretrained_weights`` accepts what we export."""
    numpy_types = [np.dtype, np.dtypes.Float64DType, np.float64(0).__reduce__()[0]]
    with torch.serialization.safe_globals(numpy_types):  # nnU-Net logs numpy floats
        original = torch.load(FIXTURES / f"nnunet_{kind}.pth", weights_only=True)
    original = original["network_weights"]
    net = build_network(_plan(kind), 1, 3, deep_supervision=False)
    net.load_state_dict(load_nnunet_checkpoint(FIXTURES / f"nnunet_{kind}.pth")["network_weights"])
    export_for_nnunet(net, tmp_path / "pretrained.pth")
    exported = torch.load(tmp_path / "pretrained.pth", weights_only=True)["network_weights"]
    assert sorted(exported) == sorted(original)
    assert all(torch.equal(exported[k], original[k]) for k in original)
