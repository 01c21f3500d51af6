"""What ``tools/infer.py`` keeps of a prediction besides its picture: a machine-readable result per image, and
the bound on the memory one image may take.

A prediction is read by its structure (the ``predict`` contract's shapes), so any task whose ``predict`` returns
one of these gets a result:

- an integer map ``[H, W]`` (semantic labels): a PNG of class indices (uint8, or uint16 beyond 256 classes), the
  format of a segmentation dataset with ``reduce_zero_label=False``;
- a float map ``[H, W]`` (depth in metres): a uint16 PNG in millimetres, 0 where nothing is predicted (NYU Depth
  v2's format; depths beyond 65.535 m are clipped);
- segments (``{"panoptic": int [H, W], "segments": [...]}``): a COCO panoptic PNG (id = R + 256 G + 256^2 B) and its
  ``segments_info`` in the record;
- ``{"boxes", "scores", "labels"}``: COCO result entries (``image_id``, ``category_id``, ``bbox`` as x, y, w, h,
  ``score``), one JSON line each in ``detections.jsonl``;
- class probabilities ``[K]``: the top five (index, name, probability) in the record.

Large images: one with more than ``max_pixels`` pixels is predicted on a copy scaled down to ``max_pixels`` (aspect
kept, area interpolation) and the prediction is scaled back to the image's size (nearest for label and segment
maps, bilinear for depth, boxes multiplied), so the memory a prediction takes is bounded by ``max_pixels`` times
the model's per-pixel cost (a full-resolution softmax over K classes is 4 K bytes a pixel) plus a few bytes a
pixel of the image itself.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import cv2
import numpy as np
import torch

MAX_PIXELS = 1 << 22  # 4.2 megapixels (2048 x 2048): an HD frame and a 12-megapixel photo's quarter fit
DEPTH_UNITS = 1000.0  # uint16 PNG units per metre (millimetres, as NYU Depth v2 stores depth)


@dataclass
class Result:
    """One image's result: ``png`` (an array written as ``results/<name>.png``, or None), ``record`` (JSON-able
    fields for the index line) and ``coco`` (COCO result entries, detections only)."""

    png: np.ndarray | None = None
    record: dict = field(default_factory=dict)
    coco: list[dict] = field(default_factory=list)


def predict_bounded(predictor, image: np.ndarray, options: Mapping, max_pixels: int = MAX_PIXELS):
    """``predictor.predict(image, **options)``, on a copy scaled down to ``max_pixels`` when the image is larger
    (the prediction scaled back to the image's size: see the module docstring)."""
    h, w = image.shape[:2]
    if h * w <= max_pixels:
        return predictor.predict(image, **options)
    scale = math.sqrt(max_pixels / (h * w))
    small = cv2.resize(image, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    return upsample(predictor.predict(small, **options), (h, w), small.shape[:2])


def upsample(prediction, size: tuple[int, int], small: tuple[int, int]):
    """A prediction made at ``small`` (h, w), at ``size``."""
    h, w = size
    if _segment_map(prediction):
        key = _segment_map(prediction)
        return {**prediction, key: _resize_map(np.asarray(prediction[key]), size)}
    if isinstance(prediction, Mapping) and "boxes" in prediction:
        boxes = torch.as_tensor(prediction["boxes"]).clone()
        boxes[:, 0::2] *= w / small[1]
        boxes[:, 1::2] *= h / small[0]
        return {**prediction, "boxes": boxes}
    if isinstance(prediction, (np.ndarray, torch.Tensor)) and prediction.ndim == 2:
        return _resize_map(np.asarray(prediction), size)
    return prediction  # per-image values (class probabilities) do not depend on the size


def _resize_map(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest for integer maps (in the smallest dtype cv2 resizes that holds them), bilinear for float maps."""
    if np.issubdtype(array.dtype, np.floating):
        return cv2.resize(array.astype(np.float32), size[::-1], interpolation=cv2.INTER_LINEAR)
    small = array.astype(np.uint16) if array.min() >= 0 and array.max() < 65536 else array.astype(np.int32)
    return cv2.resize(small, size[::-1], interpolation=cv2.INTER_NEAREST).astype(array.dtype, copy=False)


def image_id(name: str):
    """COCO's ``image_id`` for an image file: its stem as an int where it is one (COCO's file names), else the
    stem."""
    return int(name) if name.isdigit() else name


def result_of(prediction, stem: str, class_names) -> Result | None:
    """The machine-readable ``Result`` of a prediction (see the module docstring); None for another structure."""
    if _segment_map(prediction):
        ids = np.asarray(prediction[_segment_map(prediction)]).astype(np.uint32)
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)
        segments = [{k: _plain(v) for k, v in s.items()} for s in prediction.get("segments", [])]
        return Result(rgb, {"segments_info": segments})
    if isinstance(prediction, Mapping) and "boxes" in prediction:
        boxes = torch.as_tensor(prediction["boxes"]).float().tolist()
        scores = torch.as_tensor(prediction["scores"]).float().tolist()
        labels = torch.as_tensor(prediction["labels"]).tolist()
        coco = [{"image_id": image_id(stem), "category_id": int(c), "bbox": [x0, y0, x1 - x0, y1 - y0], "score": s}
                for (x0, y0, x1, y1), s, c in zip(boxes, scores, labels)]
        return Result(None, {"detections": len(coco)}, coco)
    if isinstance(prediction, (np.ndarray, torch.Tensor)):
        array = np.asarray(prediction.cpu() if isinstance(prediction, torch.Tensor) else prediction)
        if array.ndim == 2 and np.issubdtype(array.dtype, np.integer):
            dtype = np.uint8 if array.max(initial=0) < 256 else np.uint16
            return Result(array.astype(dtype), {"classes": sorted(int(c) for c in np.unique(array))})
        if array.ndim == 2:
            mm = np.clip(np.nan_to_num(array * DEPTH_UNITS), 0, 65535).round().astype(np.uint16)
            return Result(mm, {"depth_units_per_metre": DEPTH_UNITS})
        if array.ndim == 1:
            top = np.argsort(-array)[:5]
            names = class_names or [str(i) for i in range(len(array))]
            return Result(None, {"top5": [[int(i), names[i], float(array[i])] for i in top]})
    return None


def _segment_map(prediction) -> str | None:
    """The key of the segment-id map of a prediction made of segments (``{map key: int [H, W], "segments": [...]}``,
    the ``predict`` contract for segments), else None."""
    if not isinstance(prediction, Mapping) or "segments" not in prediction:
        return None
    return next((k for k, v in prediction.items() if getattr(v, "ndim", 0) == 2), None)


def _plain(value):
    """A JSON-able copy of a numpy or torch scalar."""
    if isinstance(value, torch.Tensor):
        value = value.item()
    return value.item() if isinstance(value, np.generic) else value
