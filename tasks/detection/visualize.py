"""Pictures of detections: boxes with class names and scores drawn on the image."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch


def save_detection_png(
    path: str | Path,
    image: np.ndarray,
    detections: Mapping[str, torch.Tensor],
    names: Mapping[int, str] | None = None,
    threshold: float = 0.3,
) -> int:
    """Draw ``detections`` (``boxes[N, 4]`` xyxy pixels, ``scores[N]``, ``labels[N]``) scoring at least
    ``threshold`` on ``image[H, W, 3]`` uint8 RGB and write a PNG; returns how many were drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    keep = detections["scores"] >= threshold
    boxes, scores, labels = (detections[k][keep].tolist() for k in ("boxes", "scores", "labels"))
    h, w = image.shape[:2]
    fig, ax = plt.subplots(figsize=(8 * w / max(h, w), 8 * h / max(h, w)))
    ax.imshow(image)
    colours = plt.get_cmap("tab10")
    for (x0, y0, x1, y1), score, label in zip(boxes, scores, labels):
        colour = colours(int(label) % 10)
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=2))
        name = (names or {}).get(int(label), f"class {int(label)}")
        ax.text(x0, y0, f"{name} {score:.2f}", color="white", fontsize=8, va="bottom",
                bbox=dict(facecolor=colour, alpha=0.8, pad=1, edgecolor="none"))
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return len(boxes)


def save_prediction_png(path: str | Path, image: np.ndarray, prediction: Mapping[str, torch.Tensor], *,
                        class_names: Sequence[str] | None = None, threshold: float = 0.3) -> None:
    """The detection task's picture of ``model.predict(image)`` (``tools/infer.py``): detections scoring at
    least ``threshold``, named by ``class_names`` (indexed by label)."""
    names = {i: n for i, n in enumerate(class_names)} if class_names is not None else None
    save_detection_png(path, image, prediction, names, threshold)
