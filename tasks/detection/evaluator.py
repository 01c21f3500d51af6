"""COCO box AP with pycocotools (``COCOeval``, iouType ``bbox``), accumulated over a whole dataset.

``update({image_id: {"boxes": [N, 4] xyxy original-image pixels, "scores": [N], "labels": [N] category
ids}})`` stores each image's detections (as float64 ``[N, 6]`` rows ``x, y, w, h, score, category``);
``compute()`` gathers them from every rank, builds the results ``COCO`` object the way ``COCO.loadRes``
does for boxes (``area = w·h``, ``iscrowd = 0``, ids in order) and runs ``evaluate``, ``accumulate``,
``summarize``; ``per_class`` then holds each category's AP. Rules (DETR's, made explicit):

- Only images passed to ``update`` are evaluated (``params.imgIds``), so an image without detections
  must still be passed, with empty tensors: its ground truth then counts as missed. Evaluating a
  subset of the ground truth (a short validation run) is therefore possible; ``compute()`` with no
  image at all is a ``ValueError`` (pycocotools would read an empty id list as "every image").
- An image id may be updated once per process (a second update of the same id is a ``ValueError``).
  Across ranks, copies of an image with identical detections are kept once (samplers that pad the
  last batch by repeating images, like ``DistributedSampler``); copies that differ are a ``ValueError``.
- Detections are fed to COCOeval in image-id order, each image's in the order given, so ties in score
  are broken the same way whatever the number of processes.
- Labels that are not categories of the ground truth (COCO's unused ids, 0) are kept, and COCOeval
  ignores them, as it does for a results file.
- The stats are pycocotools' values as plain floats, including its ``-1`` for "no ground truth in this
  area range"; pycocotools' printout is kept in ``summary`` (the text of ``summarize()``) and ``log``
  (everything it printed), and printed too with ``verbose=True``.
- COCOeval adds an ``ignore`` key (= ``iscrowd``) to the ground-truth annotations it reads; the ground
  truth is not deep-copied (COCO val2017 with its masks is several hundred MB).
"""
from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path
from typing import Mapping, Union

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tasks.common.distributed import all_gather_objects

from .datasets import load_coco

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _as_array(value, image_id: int, key: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().to(torch.float64).numpy()
    if isinstance(value, np.ndarray):
        return value.astype(np.float64)
    raise TypeError(
        f"CocoEvaluator.update: predictions[{image_id}][{key!r}] must be a torch.Tensor or numpy.ndarray, "
        f"got {type(value).__name__}"
    )


def _as_image_id(key) -> int:
    if isinstance(key, torch.Tensor) and key.numel() == 1 and not key.is_floating_point():
        return int(key)
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return int(key)
    raise TypeError(f"CocoEvaluator.update: image ids must be ints, got {key!r} ({type(key).__name__})")


def detections_to_rows(image_id: int, prediction: Mapping) -> np.ndarray:
    """``{"boxes": [N, 4] xyxy, "scores": [N], "labels": [N]}`` -> float64 ``[N, 6]`` rows
    ``(x, y, w, h, score, label)``, the COCO results format of one image."""
    if not isinstance(prediction, Mapping) or not {"boxes", "scores", "labels"} <= set(prediction):
        raise ValueError(
            f"CocoEvaluator.update: predictions[{image_id}] must be a dict with 'boxes', 'scores' and 'labels', "
            f"got {prediction if not isinstance(prediction, Mapping) else sorted(prediction)!r}"
        )
    boxes = _as_array(prediction["boxes"], image_id, "boxes")
    scores = _as_array(prediction["scores"], image_id, "scores")
    labels = _as_array(prediction["labels"], image_id, "labels")
    n = len(scores) if scores.ndim == 1 else -1
    if boxes.ndim == 1 and boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if n < 0 or boxes.shape != (n, 4) or labels.shape != (n,):
        raise ValueError(
            f"CocoEvaluator.update: image {image_id}: expected boxes [N, 4], scores [N], labels [N], got "
            f"{tuple(boxes.shape)}, {tuple(scores.shape)}, {tuple(labels.shape)}"
        )
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise ValueError(f"CocoEvaluator.update: image {image_id}: boxes or scores contain NaN/inf")
    if (labels != np.round(labels)).any():
        raise ValueError(f"CocoEvaluator.update: image {image_id}: labels must be integer category ids")
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    return np.concatenate([xywh, scores[:, None], labels[:, None]], axis=1)


class CocoEvaluator:
    """COCO box AP over every image passed to ``update``; see the module docstring for the rules."""

    def __init__(self, coco_gt: Union[COCO, str, Path], verbose: bool = False):
        if isinstance(coco_gt, (str, Path)):
            if not Path(coco_gt).is_file():
                raise FileNotFoundError(f"CocoEvaluator: annotation file {coco_gt} does not exist")
            coco_gt = load_coco(coco_gt)  # checked: an empty or malformed json is a ValueError naming it
        if not isinstance(coco_gt, COCO):
            raise TypeError(f"CocoEvaluator: coco_gt must be a pycocotools COCO or a json path, got {type(coco_gt).__name__}")
        self.coco_gt = coco_gt
        self.verbose = verbose
        self._gt_image_ids = set(coco_gt.getImgIds())
        self.summary = ""
        self.log = ""
        self.per_class: dict[int, float] = {}  # after compute(): AP of each ground-truth category id
        self.reset()

    def reset(self) -> None:
        self._rows: dict[int, np.ndarray] = {}

    def update(self, predictions: Mapping) -> None:
        """``predictions``: ``{image_id: {"boxes": [N, 4] xyxy pixels of the original image, "scores": [N],
        "labels": [N] category ids}}`` (tensors or numpy arrays; N may be 0)."""
        if not isinstance(predictions, Mapping):
            raise TypeError(f"CocoEvaluator.update: predictions must be a dict keyed by image id, got {type(predictions).__name__}")
        new = {}
        for key, prediction in predictions.items():
            image_id = _as_image_id(key)
            if image_id not in self._gt_image_ids:
                raise ValueError(f"CocoEvaluator.update: image id {image_id} is not in the ground truth")
            if image_id in self._rows or image_id in new:
                raise ValueError(
                    f"CocoEvaluator.update: image id {image_id} was already updated; each image is evaluated once "
                    "(call reset() to start over)"
                )
            new[image_id] = detections_to_rows(image_id, prediction)
        self._rows.update(new)

    def _gathered_rows(self) -> dict[int, np.ndarray]:
        merged: dict[int, np.ndarray] = {}
        for rank_rows in all_gather_objects(self._rows):
            for image_id, rows in rank_rows.items():
                if image_id in merged and not np.array_equal(merged[image_id], rows):
                    raise ValueError(
                        f"CocoEvaluator.compute: image id {image_id} was evaluated on several processes with "
                        "different detections"
                    )
                merged.setdefault(image_id, rows)
        return merged

    def _results(self, rows: dict[int, np.ndarray]) -> COCO:
        """The results ``COCO`` object ``loadRes`` would build for bbox results (without its prints)."""
        annotations = []
        for image_id in sorted(rows):
            for x, y, w, h, score, label in rows[image_id].tolist():
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                    "bbox": [x, y, w, h], "score": score, "area": w * h, "iscrowd": 0,
                })
        results = COCO()
        results.dataset = {
            "info": copy.deepcopy(self.coco_gt.dataset.get("info", {})),
            "images": list(self.coco_gt.dataset["images"]),
            "categories": copy.deepcopy(self.coco_gt.dataset["categories"]),
            "annotations": annotations,
        }
        with contextlib.redirect_stdout(io.StringIO()):
            results.createIndex()
        return results

    def compute(self) -> dict[str, float]:
        """The 12 COCO stats ``AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl`` (fractions).

        Under ``torch.distributed`` every rank must call this; all get the same values."""
        rows = self._gathered_rows()
        if not rows:
            raise ValueError("CocoEvaluator.compute: no image was passed to update()")
        coco_eval = COCOeval(self.coco_gt, self._results(rows), iouType="bbox")
        coco_eval.params.imgIds = sorted(rows)
        log, summary = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(log):
            coco_eval.evaluate()
            coco_eval.accumulate()
        with contextlib.redirect_stdout(summary):
            coco_eval.summarize()
        self.per_class = _per_class_ap(coco_eval)
        self.summary = summary.getvalue()
        self.log = log.getvalue() + self.summary
        if self.verbose:
            print(self.log, end="")
        return {name: float(value) for name, value in zip(STAT_NAMES, coco_eval.stats)}


def _per_class_ap(coco_eval: COCOeval) -> dict[int, float]:
    """AP (IoU 0.50:0.95, all areas, 100 detections) of each category: COCOeval's precision table averaged over
    IoU thresholds and recall points where defined, as ``summarize`` does for the mean; NaN without ground truth."""
    precision = coco_eval.eval["precision"][:, :, :, 0, -1]  # [T, R, K]
    out = {}
    for k, category in enumerate(coco_eval.params.catIds):
        p = precision[:, :, k]
        out[int(category)] = float(p[p > -1].mean()) if (p > -1).any() else float("nan")
    return out


def box_agreement(first: list, second: list, *, min_score: float = 0.3, top: int = 5, iou: float = 0.8,
                  score_gap: float = 0.1) -> float:
    """How well a second model's detections (e.g. INT8) reproduce a first's (fp32) on the same images: the share
    of the first's detections scoring at least ``min_score`` (an image with none: its ``top`` best) for which the
    second has a box of the same label with IoU >= ``iou`` and a score within ``score_gap``
    (``tools/export.py --int8``). Each is a ``predict`` result: ``boxes`` xyxy, ``scores``, ``labels``."""
    from .box_ops import box_iou

    found = total = 0
    for a, b in zip(first, second):
        order = a["scores"].argsort(descending=True)
        keep = order[a["scores"][order] >= min_score]
        keep = keep if len(keep) else order[:top]
        total += len(keep)
        if not len(keep) or not len(b["scores"]):
            continue
        overlap = box_iou(a["boxes"][keep].float(), b["boxes"].float())[0]
        same = (a["labels"][keep][:, None] == b["labels"][None]) & (overlap >= iou)
        close = (a["scores"][keep][:, None] - b["scores"][None]).abs() <= score_gap
        found += int((same & close).any(1).sum())
    return found / max(1, total)
