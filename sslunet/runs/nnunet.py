"""nnU-Net v2 checkpoints as ``--init``: read safely, parameter names mapped to ours.

An nnU-Net v2 ``checkpoint_final.pth`` (``nnUNetTrainer.save_checkpoint``) holds the network's
``state_dict`` with dynamic_network_architectures' parameter names, plus plain training state.
It is read with ``torch.load(weights_only=True)``: nothing in it is executed. The only
non-tensor types it is allowed to hold besides plain Python data are numpy scalars and dtypes
(nnU-Net logs its Dice values as numpy floats); a file that needs anything else is refused with
the name of what it asked for.

Names (same architecture: nnU-Net's ``PlainConvUNet`` / ``ResidualEncoderUNet`` and ours):
``encoder.stages.S.0.convs.C.`` -> ``encoder.stages.S.C.``; ``decoder.stages.S.convs.C.`` ->
``decoder.stages.S.C.``; ResEnc: ``encoder.stem.convs.0.`` -> ``encoder.stem.``,
``encoder.stages.S.blocks.B.`` -> ``encoder.stages.S.B.``, the block's projection
``skip.<k>.`` -> ``skip.proj.``; transposed convs and segmentation layers keep their names.
nnU-Net's duplicates (``*.all_modules.*``, the decoder's reference ``decoder.encoder.*``) are
dropped. What the mapping cannot match stops at loading with the missing tensor's name.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import torch

from sslunet.errors import InputError
from sslunet.networks import build_network
from sslunet.plans import Plans
from sslunet.runs.checkpoint import FORMAT, VERSION, load_checkpoint
from sslunet.utils.atomic import atomic_path

NUMPY_DTYPES = ("Float16", "Float32", "Float64", "Int8", "Int16", "Int32", "Int64", "UInt8",
                "UInt16", "UInt32", "UInt64", "Bool")
ALLOWED_GLOBALS = ("numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar",
                   "numpy.dtype", *(f"numpy.dtypes.{t}DType" for t in NUMPY_DTYPES))
RENAMES = (  # (pattern, replacement), applied in order, first match wins
    (re.compile(r"^encoder\.stem\.convs\.0\."), "encoder.stem."),
    (re.compile(r"^encoder\.stages\.(\d+)\.blocks\.(\d+)\.skip\.\d+\."),
     r"encoder.stages.\1.\2.skip.proj."),
    (re.compile(r"^encoder\.stages\.(\d+)\.blocks\.(\d+)\."), r"encoder.stages.\1.\2."),
    (re.compile(r"^encoder\.stages\.(\d+)\.0\.convs\.(\d+)\."), r"encoder.stages.\1.\2."),
    (re.compile(r"^decoder\.stages\.(\d+)\.convs\.(\d+)\."), r"decoder.stages.\1.\2."),
)


def is_nnunet_checkpoint(path: str | Path) -> bool:
    """nnU-Net names its checkpoints ``*.pth``; sslunet's are ``*.pt``."""
    return str(path).endswith(".pth")


def sslunet_name(key: str) -> str | None:
    """Our name for an nnU-Net parameter name (None: a duplicate nnU-Net stores twice)."""
    if ".all_modules." in key or key.startswith("decoder.encoder."):
        return None
    for pattern, replacement in RENAMES:
        if pattern.match(key):
            return pattern.sub(replacement, key, count=1)
    return key


def _resolve(name: str):
    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None


def load_nnunet_checkpoint(path: str | Path) -> dict:
    """An nnU-Net v2 checkpoint as an sslunet ``--init`` checkpoint (network weights renamed,
    every tensor transferable but the segmentation heads, as for any init)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise InputError("nnU-Net checkpoint does not exist or is empty", path)
    try:
        asked = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as e:  # not a torch zip file, truncated, ...
        raise InputError(f"cannot read nnU-Net checkpoint ({type(e).__name__})", path) from None
    refused = [g for g in asked if g not in ALLOWED_GLOBALS]
    if refused:
        raise InputError(f"refused: the file asks to load {', '.join(refused)}, not plain data "
                         "(only tensors, Python data and numpy scalars are read)", path)
    # numpy's dtype classes are asked for while a scalar is rebuilt, not listed up front
    allowed = [obj for g in ALLOWED_GLOBALS if (obj := _resolve(g)) is not None]
    try:
        with torch.serialization.safe_globals(allowed):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise InputError(f"cannot load nnU-Net checkpoint ({type(e).__name__}: {first})",
                         path) from None
    weights = raw.get("network_weights") if isinstance(raw, dict) else None
    if not isinstance(weights, dict) or not weights:
        raise InputError("not an nnU-Net v2 checkpoint (no network_weights)", path)
    init_args = raw.get("init_args") if isinstance(raw.get("init_args"), dict) else {}
    mapped = {new: t for k, t in weights.items() if (new := sslunet_name(k)) is not None}
    return {"format": FORMAT, "version": VERSION, "kind": "pretrain", "network_weights": mapped,
            "configuration": init_args.get("configuration"),
            "transferable_prefixes": ["encoder.", "decoder."],
            "objective": {"name": f"nnU-Net ({raw.get('trainer_name', 'unknown trainer')})"}}


def load_init_checkpoint(path: str | Path) -> dict:
    """What ``--init PATH`` loads: an nnU-Net v2 ``.pth`` or an sslunet checkpoint."""
    from_nnunet = is_nnunet_checkpoint(path)
    return load_nnunet_checkpoint(path) if from_nnunet else load_checkpoint(path, purpose="init")


# ----------------------------------------------------------------------------- to nnU-Net
_OURS_TO_NNUNET = (  # (pattern, replacement) on our names; first match wins
    (re.compile(r"^encoder\.stem\.(conv|norm)\."), r"encoder.stem.convs.0.\1."),
    (re.compile(r"^encoder\.stages\.(\d+)\.(\d+)\.(conv1|conv2)\."),
     r"encoder.stages.\1.blocks.\2.\3."),
    (re.compile(r"^encoder\.stages\.(\d+)\.(\d+)\.(conv|norm)\."), r"encoder.stages.\1.0.convs.\2.\3."),
    (re.compile(r"^decoder\.stages\.(\d+)\.(\d+)\.(conv|norm)\."), r"decoder.stages.\1.convs.\2.\3."),
)
_SKIP = re.compile(r"^encoder\.stages\.(\d+)\.(\d+)\.skip\.proj\.(.*)$")
_IN_CONV_BLOCK = re.compile(r"\.(conv|norm)\.(weight|bias)$")


def nnunet_state_dict(network: torch.nn.Module) -> dict:
    """Our network's weights under nnU-Net v2's parameter names, with the duplicates nnU-Net
    stores (``all_modules``, ``decoder.encoder``): what ``nnUNetv2_train -pretrained_weights``
    expects of a network of the same architecture (it requires every name but the heads')."""
    out = {}
    for key, tensor in network.state_dict().items():
        skip = _SKIP.match(key)
        if skip:  # nnU-Net's skip is Sequential(pool?, conv): the conv's index says if it pools
            s, b, rest = skip.groups()
            pooled = "pool" in dict(network.encoder.stages[int(s)][int(b)].skip.named_children())
            name = f"encoder.stages.{s}.blocks.{b}.skip.{int(pooled)}.{rest}"
        else:
            name = next((p.sub(r, key, count=1) for p, r in _OURS_TO_NNUNET if p.match(key)), key)
        names = [name]
        if _IN_CONV_BLOCK.search(name) and not name.startswith(("decoder.transpconvs",
                                                                "decoder.seg_layers")):
            layer = "0" if _IN_CONV_BLOCK.search(name).group(1) == "conv" else "1"
            names.append(_IN_CONV_BLOCK.sub(rf".all_modules.{layer}.\2", name))
        names += [f"decoder.{n}" for n in names if n.startswith("encoder.")]
        out.update({n: tensor.detach().clone() for n in names})
    return out


def export_for_nnunet(network: torch.nn.Module, out_file: Path) -> None:
    """Write ``{"network_weights": ...}`` for ``nnUNetv2_train -pretrained_weights OUT``."""
    with atomic_path(Path(out_file), suffix=".pth") as tmp:
        torch.save({"network_weights": nnunet_state_dict(network)}, tmp)


def export_pretrained(checkpoint: Path, out_file: Path) -> Path:
    """An sslunet checkpoint (a pretraining's, or a fold's) as nnU-Net pretrained weights; the
    network is rebuilt from the plans the checkpoint carries."""
    ckpt = load_checkpoint(checkpoint, purpose="init")
    plans = ckpt.get("plans")
    if not isinstance(plans, dict) or "num_input_channels" not in ckpt:
        raise InputError("checkpoint carries no plans to rebuild its network from", checkpoint)
    config = Plans.from_dict(plans).configuration(ckpt["configuration"])
    heads = [t for k, t in ckpt["network_weights"].items() if k.startswith("decoder.seg_layers.")]
    network = build_network(config, ckpt["num_input_channels"], heads[0].shape[0] if heads else 2)
    network.load_state_dict(ckpt["network_weights"])
    export_for_nnunet(network, out_file)
    return Path(out_file)
