"""Write tests/fixtures/nnunet_*.pth: tiny checkpoints in nnU-Net v2's own format, made with
nnU-Net's own network code, plus the output each network gives on a fixed input.

Run with an environment that has nnunetv2 (the test suite does not need it):
    /path/to/nnunet_venv/bin/python tests/helpers/make_nnunet_fixtures.py
The layout mirrors what nnUNetTrainer.save_checkpoint writes (network_weights, optimizer_state,
grad_scaler_state, logging with numpy floats, _best_ema, current_epoch, init_args,
trainer_name, inference_allowed_mirroring_axes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet

OUT = Path(__file__).resolve().parents[1] / "fixtures"
COMMON = dict(conv_op=torch.nn.Conv2d, kernel_sizes=3, strides=(1, 2, 2), num_classes=3,
              conv_bias=True, norm_op=torch.nn.InstanceNorm2d,
              norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=torch.nn.LeakyReLU,
              nonlin_kwargs={"inplace": True}, deep_supervision=False)
NETS = {
    "plain": (PlainConvUNet, dict(n_conv_per_stage=(2, 2, 2), n_conv_per_stage_decoder=(2, 2))),
    "resenc": (ResidualEncoderUNet, dict(n_blocks_per_stage=(1, 2, 2),
                                         n_conv_per_stage_decoder=(1, 1))),
}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, (cls, kw) in NETS.items():
        torch.manual_seed(0)
        net = cls(input_channels=1, n_stages=3, features_per_stage=(4, 8, 16), **COMMON, **kw)
        with torch.no_grad():  # non-trivial norm affines, so a wrong mapping shows
            for m in net.modules():
                if isinstance(m, torch.nn.InstanceNorm2d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
        x = torch.linspace(-2, 2, 32 * 32).reshape(1, 1, 32, 32)
        with torch.no_grad():
            expected = net.eval()(x)
        opt = torch.optim.SGD(net.parameters(), lr=1e-2, momentum=0.99, nesterov=True)
        ckpt = {
            "network_weights": net.state_dict(), "optimizer_state": opt.state_dict(),
            "grad_scaler_state": None,
            "logging": {"mean_fg_dice": [np.float64(0.5)], "ema_fg_dice": [np.float64(0.5)],
                        "epoch_end_timestamps": [1.0]},
            "_best_ema": np.float64(0.5), "current_epoch": 1,
            "init_args": {"plans": {"plans_name": "nnUNetPlans"}, "configuration": "2d",
                          "fold": 0, "dataset_json": {"labels": {"background": 0, "a": 1, "b": 2}},
                          "device": torch.device("cpu")},
            "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": (0, 1),
        }
        torch.save(ckpt, OUT / f"nnunet_{name}.pth")
        torch.save({"input": x, "output": expected}, OUT / f"nnunet_{name}_io.pt")
        print(f"wrote {OUT / f'nnunet_{name}.pth'}")


if __name__ == "__main__":
    main()
