"""Loading pretrained weights into a network by parameter name, with explicit mismatches.

Rules (nnU-Net's ``load_pretrained_weights`` and PretrainedTrainer, made explicit):
- only tensors under the checkpoint's ``transferable_prefixes`` are loaded (pretraining
  checkpoints say which sub-modules their objective trained: the encoder always, decoder
  blocks for restoration objectives and the local contrastive stage); segmentation heads
  (``decoder.seg_layers``) and projection heads are never loaded;
- the configuration and the architecture must match; any missing key or wrong shape stops with
  a message that says what differs and how to fix it;
- a different number of input channels is adapted as nnU-Net's PretrainedTrainer does: the
  first convolution's weights are averaged over the checkpoint's input channels, repeated for
  each new channel and divided by the new channel count. For the usual case, a 1-channel
  pretraining, a constant image then gives the same activation as before (for a k-channel
  checkpoint, 1/k of it).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sslunet.errors import InputError
from sslunet.plans import ConfigurationPlan

ARCH_FIELDS = ("network", "pool_op_kernel_sizes", "conv_kernel_sizes", "features_per_stage",
               "n_conv_per_stage_encoder", "n_conv_per_stage_decoder")


def check_compatible(ckpt: dict, config: ConfigurationPlan, path: Path) -> None:
    """A checkpoint trained for another configuration or architecture is an InputError."""
    theirs = ckpt.get("configuration")
    if theirs != config.name:
        raise InputError(f"checkpoint was trained for configuration '{theirs}', not "
                         f"'{config.name}'; fine-tune with -c {theirs} or pretrain with "
                         f"-c {config.name}", path)
    plan = ckpt.get("plans", {}).get("configurations", {}).get(theirs, {})
    diffs = [f for f in ARCH_FIELDS if f in plan and
             _as_tuple(plan[f]) != _as_tuple(getattr(config, f))]
    if diffs:
        f = diffs[0]
        raise InputError(f"checkpoint architecture differs in {', '.join(diffs)} ({f}: "
                         f"{_as_tuple(plan[f])} vs {_as_tuple(getattr(config, f))}); pretrain "
                         "again with the current plans.json", path)


def _as_tuple(v):
    return tuple(_as_tuple(x) for x in v) if isinstance(v, (list, tuple)) else v


def _adapt_stem(w: torch.Tensor, n_in: int) -> torch.Tensor:
    mean = w.mean(dim=1, keepdim=True)  # (out, 1, *k)
    return mean.repeat(1, n_in, *([1] * (w.ndim - 2))) / n_in  # (out, n_in, *k)


def load_pretrained(network: nn.Module, ckpt: dict, config: ConfigurationPlan,
                    path: Path) -> dict:
    """Copy the transferable tensors of ``ckpt`` into ``network``; return a report dict."""
    check_compatible(ckpt, config, path)
    source = ckpt["network_weights"]
    prefixes = tuple(ckpt.get("transferable_prefixes", ("encoder.", "decoder.")))
    target = network.state_dict()
    # task-specific tensors (segmentation heads) never load; the input conv adapts its channels
    never, stem = tuple(network.task_specific_prefixes), f"{network.input_conv_key}.weight"
    wanted = [k for k in target if k.startswith(prefixes) and not k.startswith(never)]
    missing = [k for k in wanted if k not in source]
    if missing:
        raise InputError(f"checkpoint lacks {len(missing)} tensor(s) the network needs (first: "
                         f"{missing[0]}); it was made for another architecture", path)
    loaded, adapted = {}, []
    for k in wanted:
        w = source[k]
        if k == stem and w.shape != target[k].shape and w.shape[0] == target[k].shape[0] \
                and w.shape[2:] == target[k].shape[2:]:
            w = _adapt_stem(w, target[k].shape[1])
            adapted.append(k)
        if w.shape != target[k].shape:
            raise InputError(f"tensor {k} has shape {tuple(w.shape)} in the checkpoint but "
                             f"{tuple(target[k].shape)} in the network; pretrain again with the "
                             "current plans.json", path)
        loaded[k] = w
    network.load_state_dict({**target, **loaded})
    return {"checkpoint": str(path), "objective": ckpt.get("objective", {}).get("name"),
            "loaded": sorted(loaded), "adapted_input_channels": adapted,
            "not_loaded": sorted(k for k in target if k not in loaded)}
