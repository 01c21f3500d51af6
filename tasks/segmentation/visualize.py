"""Pictures of predictions: the image with its label map blended in a palette, and a legend of the classes."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .datasets import ADE20K_PALETTE, distinct_palette


def palette_for(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """ADE20K's palette for 150-class models, a generated distinct one otherwise."""
    return ADE20K_PALETTE if num_classes == len(ADE20K_PALETTE) else distinct_palette(num_classes)


def blend(image: np.ndarray, labels: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5) -> np.ndarray:
    """``image[H, W, 3]`` uint8 RGB with ``labels[H, W]`` painted over it; labels outside the palette stay clear."""
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image {image.shape[:2]} and labels {labels.shape} differ in size")
    colours = np.asarray(palette, dtype=np.float32)
    valid = (labels >= 0) & (labels < len(colours))
    out = image.astype(np.float32)
    out[valid] = (1 - alpha) * out[valid] + alpha * colours[labels[valid]]
    return out.round().astype(np.uint8)


def save_segmentation_png(
    path: str | Path,
    image: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]] | None = None,
) -> None:
    """Write the input beside its blended prediction, with a legend of the classes present (largest first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    palette = palette or palette_for(len(class_names))
    ids, counts = np.unique(labels[(labels >= 0) & (labels < len(class_names))], return_counts=True)
    order = np.argsort(-counts)  # largest first
    h, w = labels.shape
    fig, axes = plt.subplots(1, 2, figsize=(2 * 5 * w / max(h, w) + 2, 5 * h / max(h, w)))
    axes[0].imshow(image)
    axes[0].set_title("input")
    axes[1].imshow(blend(image, labels, palette))
    axes[1].set_title("prediction")
    for ax in axes:
        ax.axis("off")
    handles = [
        Patch(color=np.asarray(palette[i]) / 255, label=f"{class_names[i]} {c / labels.size:.1%}")
        for i, c in zip(ids[order], counts[order])
    ]
    fig.legend(handles=handles[:25], loc="center right", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_prediction_png(path: str | Path, image: np.ndarray, prediction: np.ndarray, *,
                        class_names: Sequence[str]) -> None:
    """The segmentation task's picture of ``model.predict(image)`` (``tools/infer.py``)."""
    save_segmentation_png(path, image, prediction, class_names, palette_for(len(class_names)))
