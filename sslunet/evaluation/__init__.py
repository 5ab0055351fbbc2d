"""Segmentation metrics (Dice, HD95, volume error) and folder-level evaluation."""

from sslunet.evaluation.api import evaluate_folders
from sslunet.evaluation.metrics import (
    EMPTY_MASK_NOTES,
    case_metrics,
    class_metrics,
    dice,
    hd95,
    volume_difference_ml,
)

__all__ = ["EMPTY_MASK_NOTES", "case_metrics", "class_metrics", "dice", "evaluate_folders",
           "hd95", "volume_difference_ml"]
