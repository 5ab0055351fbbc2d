"""A picture a person can check: image, reference and prediction side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sslunet.dataset.imageio import read_array
from sslunet.utils.atomic import atomic_path

COLORS = np.array([[0, 0, 0], [230, 60, 60], [60, 200, 90], [70, 120, 240], [240, 200, 40],
                   [200, 80, 220]], dtype=np.float32) / 255


def _blend(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    lo, hi = np.percentile(image, [1, 99])
    gray = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat(gray[..., None], 3, axis=-1)  # (H, W) -> (H, W, 3)
    color = COLORS[np.clip(labels, 0, len(COLORS) - 1)]  # (H, W, 3)
    mask = (labels > 0)[..., None]
    return np.where(mask, (1 - alpha) * rgb + alpha * color, rgb)


def save_overlay(image_file: Path, reference_file: Path, prediction_file: Path, out_png: Path,
                 label_names: dict[str, int], title: str = "") -> int:
    """Three panels on the slice with the most reference foreground; returns that slice index."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    image, _ = read_array(image_file)
    ref, _ = read_array(reference_file, dtype=np.int16)
    pred, _ = read_array(prediction_file, dtype=np.int16)
    z = int(np.argmax((ref > 0).reshape(ref.shape[0], -1).sum(1)))
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    panels = [("image", _blend(image[z], np.zeros_like(ref[z]))),
              ("reference", _blend(image[z], ref[z])), ("prediction", _blend(image[z], pred[z]))]
    for ax, (name, rgb) in zip(axes, panels):
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    handles = [Patch(color=COLORS[v % len(COLORS)], label=n) for n, v in label_names.items()
               if v > 0]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.suptitle(title or f"{Path(image_file).name}, slice {z}")
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return z
