"""Pictures of depth: the input beside its colour-mapped depth, with a colour bar in metres."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np


def save_depth_png(path: str | Path, image: np.ndarray, depth: np.ndarray, max_depth: Optional[float] = None,
                   cmap: str = "magma_r") -> None:
    """Write ``image`` (``uint8 [H, W, 3]`` RGB) beside ``depth`` (``[H, W]`` metres) to the PNG ``path``.

    The colours span ``0 .. max_depth`` (default: the largest finite depth); near is bright, far is dark
    with the default ``magma_r``. Pixels that are not finite or ``<= 0`` (no measurement) are grey.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2 or image.shape[:2] != depth.shape:
        raise ValueError(f"save_depth_png: image {image.shape} and depth {depth.shape} must be [H, W, 3] and [H, W]")
    valid = np.isfinite(depth) & (depth > 0)
    if max_depth is None:
        max_depth = float(depth[valid].max()) if valid.any() else 1.0
    if not max_depth > 0:
        raise ValueError(f"save_depth_png: max_depth must be > 0 (metres), got {max_depth!r}")
    colours = matplotlib.colormaps[cmap].with_extremes(bad="0.5")
    h, w = depth.shape
    fig, axes = plt.subplots(1, 2, figsize=(2 * 5 * w / max(h, w) + 1.2, 5 * h / max(h, w)))
    axes[0].imshow(image)
    axes[0].set_title("input")
    shown = axes[1].imshow(np.ma.masked_array(depth, ~valid), cmap=colours, vmin=0.0, vmax=max_depth)
    axes[1].set_title("depth")
    for ax in axes:
        ax.axis("off")
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04).set_label("depth (m)")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def save_prediction_png(path: str | Path, image: np.ndarray, prediction: np.ndarray, *, class_names=None,
                        max_depth: Optional[float] = None) -> None:
    """The depth task's picture of ``model.predict(image)`` (``tools/infer.py``); see ``save_depth_png``."""
    save_depth_png(path, image, prediction, max_depth)
