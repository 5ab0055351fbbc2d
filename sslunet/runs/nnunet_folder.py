"""An sslunet model folder as an nnU-Net v2 results folder, for ``nnUNetv2_predict``.

``sslunet_export -m MODEL_DIR --to-nnunet OUT`` writes
``OUT/<dataset>/nnUNetTrainer__nnUNetPlans__<configuration>/`` with what nnU-Net v2's
predictor (``nnUNetPredictor.initialize_from_trained_model_folder``) reads: ``plans.json``
(nnU-Net's format: the same preprocessing, spacing, patch and network, the network named by its
dynamic_network_architectures class and keyword arguments), ``dataset.json`` and, per finished
fold, ``fold_K/checkpoint_final.pth`` (the weights under nnU-Net's parameter names, with the
metadata nnU-Net's trainer writes: ``init_args``, ``trainer_name``,
``inference_allowed_mirroring_axes``). Then
``nnUNet_results=OUT nnUNetv2_predict -d <dataset> -c <configuration> -f K -i IN -o PRED``
runs the sslunet-trained model in nnU-Net.

What does not travel: sslunet's ``postprocessing.json`` (nnU-Net keeps its own decision in a
pickle written by ``nnUNetv2_determine_postprocessing``; run that, or ``sslunet_predict``, for
post-processed masks), and training state (optimiser, logs): the folder is for inference and as
a starting point, not for ``nnUNetv2_train --c``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sslunet.errors import InputError
from sslunet.networks import build_network
from sslunet.plans import ConfigurationPlan, Plans
from sslunet.runs.checkpoint import load_checkpoint
from sslunet.runs.layout import (
    DATASET_FILE, PLANS_FILE, checkpoint_path, fold_dirs, fold_name,
)
from sslunet.runs.nnunet import nnunet_state_dict
from sslunet.utils.atomic import atomic_path, read_json, write_json

TRAINER = "nnUNetTrainer"
PLANS_NAME = "nnUNetPlans"
NETWORK_CLASSES = {
    "plain_unet": ("dynamic_network_architectures.architectures.unet.PlainConvUNet",
                   "n_conv_per_stage"),
    "resenc_unet": ("dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
                    "n_blocks_per_stage"),
}
NORMALIZATION = {"zscore": "ZScoreNormalization", "ct": "CTNormalization",
                 "nonorm": "NoNormalization", "rescale_to_0_1": "RescaleTo01Normalization"}
RESAMPLING_FN = "resample_data_or_seg_to_shape"


def nnunet_model_dir(out_root: Path, dataset: str, configuration: str) -> Path:
    """Where nnU-Net v2 looks for a trained model:
    ``<results>/<dataset>/<trainer>__<plans>__<configuration>``."""
    return Path(out_root) / dataset / f"{TRAINER}__{PLANS_NAME}__{configuration}"


def _architecture(config: ConfigurationPlan) -> dict:
    if config.network not in NETWORK_CLASSES:
        raise InputError(f"network '{config.network}' has no nnU-Net counterpart")
    class_name, per_stage = NETWORK_CLASSES[config.network]
    nd = config.ndim
    return {
        "network_class_name": class_name,
        "arch_kwargs": {
            "n_stages": config.num_stages,
            "features_per_stage": list(config.features_per_stage),
            "conv_op": f"torch.nn.modules.conv.Conv{nd}d",
            "kernel_sizes": [list(k) for k in config.conv_kernel_sizes],
            "strides": [list(s) for s in config.pool_op_kernel_sizes],
            per_stage: list(config.n_conv_per_stage_encoder),
            "n_conv_per_stage_decoder": list(config.n_conv_per_stage_decoder),
            "conv_bias": True,
            "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{nd}d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def _resampling(config: ConfigurationPlan) -> dict:
    r = config.resampling
    kwargs = lambda seg, order, order_z: {  # noqa: E731
        "is_seg": seg, "order": order, "order_z": order_z, "force_separate_z": None}
    return {"resampling_fn_data": RESAMPLING_FN,
            "resampling_fn_data_kwargs": kwargs(False, r.order_data, r.order_z_data),
            "resampling_fn_seg": RESAMPLING_FN,
            "resampling_fn_seg_kwargs": kwargs(True, r.order_seg, r.order_z_seg),
            "resampling_fn_probabilities": RESAMPLING_FN,
            "resampling_fn_probabilities_kwargs": kwargs(False, 1, 0)}


def nnunet_configuration(config: ConfigurationPlan) -> dict:
    """One configuration of an nnU-Net v2 ``plans.json``."""
    return {
        "data_identifier": f"{PLANS_NAME}_{config.name}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": config.batch_size,
        "patch_size": list(config.patch_size),
        "median_image_size_in_voxels": list(config.median_image_size),
        "spacing": list(config.spacing),
        "normalization_schemes": [NORMALIZATION[n] for n in config.normalization_schemes],
        "use_mask_for_norm": list(config.use_mask_for_norm),
        **_resampling(config),
        "architecture": _architecture(config),
        "batch_dice": config.batch_dice,
    }


def nnunet_plans(plans: Plans, configurations: list[str]) -> dict:
    """An nnU-Net v2 ``plans.json`` for ``configurations`` of ``plans``."""
    fwd = list(plans.transpose_forward)
    stats = {str(c): {"max": s.max, "mean": s.mean, "median": s.median, "min": s.min,
                      "percentile_00_5": s.percentile_00_5,
                      "percentile_99_5": s.percentile_99_5, "std": s.std}
             for c, s in enumerate(plans.intensity_stats)}
    return {
        "dataset_name": plans.dataset_name, "plans_name": PLANS_NAME,
        "original_median_spacing_after_transp": [plans.original_median_spacing[a] for a in fwd],
        "original_median_shape_after_transp": [plans.original_median_shape[a] for a in fwd],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": fwd, "transpose_backward": list(plans.transpose_backward),
        "configurations": {c: nnunet_configuration(plans.configuration(c))
                           for c in configurations},
        "experiment_planner_used": f"sslunet ({plans.plans_name})",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": stats,
    }


def _fold_checkpoint(ckpt: dict, plans: Plans, nnunet_plans_dict: dict, dataset_json: dict,
                     fold: str) -> dict:
    """What nnU-Net's trainer saves, with the weights renamed (training state left out)."""
    config = plans.configuration(ckpt["configuration"])
    network = build_network(config, plans.num_input_channels, plans.num_classes)
    network.load_state_dict(ckpt["network_weights"])
    return {
        "network_weights": nnunet_state_dict(network),
        "optimizer_state": None, "grad_scaler_state": None, "logging": {},
        "_best_ema": None, "current_epoch": int(ckpt.get("epoch", 0)),
        "init_args": {"plans": nnunet_plans_dict, "configuration": config.name,
                      "fold": int(fold) if fold.isdigit() else fold,
                      "dataset_json": dataset_json, "device": "cpu"},
        "trainer_name": TRAINER,
        # nnU-Net mirrors every spatial axis at test time unless told otherwise (as we do)
        "inference_allowed_mirroring_axes": tuple(range(config.ndim)),
    }


def export_model_folder(model_dir: Path, out_root: Path) -> Path:
    """Write the nnU-Net v2 results folder of a finished sslunet model folder; returns it.

    Raises:
        InputError: no finished fold, a network nnU-Net does not have, or an existing target
            folder (never overwritten).
    """
    model_dir = Path(model_dir)
    folds = [d for d in fold_dirs(model_dir) if checkpoint_path(d).is_file()]
    if not (model_dir / PLANS_FILE).is_file() or not folds:
        raise InputError("not a model folder with a finished fold (plans.json and "
                         "fold_K/checkpoint_final.pt)", model_dir)
    plans = Plans.load(model_dir / PLANS_FILE)
    dataset_json = read_json(model_dir / DATASET_FILE)
    ckpts = {fold_name(d): load_checkpoint(checkpoint_path(d), purpose="init") for d in folds}
    configuration = next(iter(ckpts.values()))["configuration"]
    target = nnunet_model_dir(out_root, plans.dataset_name, configuration)
    if target.exists():
        raise InputError("already exists; remove it or choose another output folder "
                         "(exports never overwrite)", target)
    as_plans = nnunet_plans(plans, [configuration])
    tmp = target.with_name(target.name + ".partial")
    for fold, ckpt in ckpts.items():
        payload = _fold_checkpoint(ckpt, plans, as_plans, dataset_json, fold)
        (tmp / f"fold_{fold}").mkdir(parents=True, exist_ok=True)
        with atomic_path(tmp / f"fold_{fold}" / "checkpoint_final.pth", suffix=".pth") as f:
            torch.save(payload, f)
    write_json(tmp / "plans.json", as_plans)
    write_json(tmp / "dataset.json", dataset_json)
    tmp.rename(target)  # the folder appears complete or not at all
    return target
