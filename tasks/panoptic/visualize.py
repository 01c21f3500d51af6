"""Pictures of panoptic predictions: every segment in its colour over the image, outlined, with its class name.

Stuff segments take their class's colour; thing segments a colour of their own (the class's colour for the first
instance, then other distinct colours), so touching instances of one class stay apart. VOID pixels are left
clear. A segment's name is written at its most interior pixel (the maximum of the distance to its border).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import cv2
import numpy as np

from tasks.segmentation.datasets import distinct_palette

Names = Union[Sequence[str], Mapping[int, str], None]


def _name(segment: Mapping, class_names: Names, category_ids: Optional[Sequence[int]]) -> str:
    """The class name of ``segment``: ``class_names[segment["label"]]`` (contiguous label) when the segment has
    one, else by ``category_id`` (a mapping ``{category_id: name}``, or names listed in ``category_ids`` order)."""
    category_id = int(segment["category_id"])
    if class_names is None:
        return f"category {category_id}"
    if isinstance(class_names, Mapping):
        return class_names.get(category_id, f"category {category_id}")
    if "label" in segment and 0 <= int(segment["label"]) < len(class_names):
        return class_names[int(segment["label"])]
    if category_ids is not None and category_id in category_ids:
        return class_names[list(category_ids).index(category_id)]
    return f"category {category_id}"


def segment_colours(segments: Sequence[Mapping]) -> dict[int, tuple[int, int, int]]:
    """``{segment id: RGB}``: stuff by category, things one colour each (categories in order of appearance)."""
    categories = list(dict.fromkeys(int(s["category_id"]) for s in segments))
    things = sum(bool(s.get("isthing", False)) for s in segments)
    palette = distinct_palette(min(len(categories) + things + 1, 4095))[1:]  # the first is white, the outline
    colour_of_category = {c: palette[i] for i, c in enumerate(categories)}
    spare = iter(palette[len(categories):])
    used: set[int] = set()
    colours = {}
    for s in segments:
        category = int(s["category_id"])
        if s.get("isthing", False) and category in used:
            colours[int(s["id"])] = next(spare, colour_of_category[category])
        else:
            colours[int(s["id"])] = colour_of_category[category]
        used.add(category)
    return colours


def render(image: np.ndarray, panoptic: np.ndarray, colours: Mapping[int, Sequence[int]], alpha: float = 0.55) -> np.ndarray:
    """``image[H, W, 3]`` uint8 with each segment of ``panoptic[H, W]`` blended in its colour and outlined in white."""
    if image.shape[:2] != panoptic.shape:
        raise ValueError(f"image {image.shape[:2]} and panoptic {panoptic.shape} differ in size")
    out = image.astype(np.float32)
    for segment_id, colour in colours.items():
        mask = panoptic == segment_id
        out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(colour, np.float32)
    edges = np.zeros(panoptic.shape, bool)
    edges[1:] |= panoptic[1:] != panoptic[:-1]
    edges[:, 1:] |= panoptic[:, 1:] != panoptic[:, :-1]
    out[edges] = 255
    return out.round().astype(np.uint8)


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """``(x, y)`` of the pixel of ``mask`` farthest from its border."""
    distance = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(x), int(y)


def save_panoptic_png(path: Union[str, Path], image: np.ndarray, panoptic: np.ndarray, segments: Sequence[Mapping],
                      class_names: Names = None, category_ids: Optional[Sequence[int]] = None,
                      show_scores: bool = True) -> int:
    """Draw ``panoptic`` (segment ids, 0 = VOID) with ``segments`` (``id``, ``category_id``, ``isthing``,
    optionally ``score`` and ``label``) on ``image[H, W, 3]`` uint8 RGB and write a PNG; returns how many segments
    were drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panoptic = np.asarray(panoptic)
    present = set(np.unique(panoptic).tolist())
    segments = [s for s in segments if int(s["id"]) in present]
    colours = segment_colours(segments)
    h, w = panoptic.shape
    fig, ax = plt.subplots(figsize=(8 * w / max(h, w), 8 * h / max(h, w)))
    ax.imshow(render(image, panoptic, colours))
    for segment in segments:
        x, y = interior_point(panoptic == int(segment["id"]))
        text = _name(segment, class_names, category_ids)
        if show_scores and "score" in segment:
            text += f" {float(segment['score']):.2f}"
        colour = np.asarray(colours[int(segment["id"])]) / 255
        dark = colour @ np.array([0.299, 0.587, 0.114]) < 0.6
        ax.text(x, y, text, color="white" if dark else "black", fontsize=8, ha="center", va="center",
                bbox=dict(facecolor=colour, alpha=0.8, pad=1, edgecolor="none"))
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return len(segments)


def save_prediction_png(path: Union[str, Path], image: np.ndarray, prediction: Mapping, *,
                        class_names: Names = None, category_ids: Optional[Sequence[int]] = None,
                        show_scores: bool = True) -> None:
    """The panoptic task's picture of ``model.predict(image)`` (``{"panoptic", "segments"}``; ``tools/infer.py``).
    ``class_names``: the model's names in label order (segments with a ``label``, or ``category_ids`` giving each
    name's category id), or ``{category_id: name}``."""
    panoptic = prediction["panoptic"]
    if hasattr(panoptic, "numpy"):
        panoptic = panoptic.detach().cpu().numpy()
    save_panoptic_png(path, image, panoptic, prediction["segments"], class_names, category_ids, show_scores)
