"""Mean IoU over a whole dataset, with the mmseg definitions (counts summed over images, then divided).

Per pixel whose target is not ``ignore_index`` (only the target decides what is ignored):

- ``intersect[c]`` = #(pred == target == c), ``area_pred[c]`` = #(pred == c), ``area_label[c]`` = #(target == c),
  ``union[c] = area_pred[c] + area_label[c] - intersect[c]``, each summed over every ``update``;
- ``IoU[c] = intersect / union``, ``Acc[c] = intersect / area_label`` (per-class recall),
  ``aAcc = sum(intersect) / sum(area_label)``; ``mIoU`` and ``mAcc`` are NaN-means over classes, where a
  class with ``union == 0`` (resp. ``area_label == 0``) is 0/0 = NaN and left out.

A prediction outside ``0 .. num_classes-1`` (e.g. a raw id or 255 written by a post-processor) belongs to
no class, as in mmseg's histograms: the pixel still counts in its target class's ``area_label`` (so it is
a miss for ``Acc``, ``IoU`` and ``aAcc``) but in no class's ``area_pred``. Such pixels are kept in an
extra last column of the count matrix, so the total stays one tensor to all-reduce.
"""
from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch

from tasks.common.distributed import all_reduce_sum

LabelMap = Union[torch.Tensor, np.ndarray]


def _as_label_tensor(x: LabelMap, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.integer):
            raise TypeError(f"MeanIoU.update: {name} must hold integer labels, got numpy dtype {x.dtype}")
        # int64 first: torch has no uint16/uint32 counterparts for every numpy integer type.
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64))
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.bool or x.is_floating_point() or x.is_complex():
            raise TypeError(f"MeanIoU.update: {name} must hold integer labels, got torch dtype {x.dtype}")
        return x.detach()
    raise TypeError(f"MeanIoU.update: {name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _nanmean(values: torch.Tensor) -> float:
    valid = values[~torch.isnan(values)]
    return float(valid.mean()) if valid.numel() else math.nan


class MeanIoU:
    """Accumulates a ``[K, K+1]`` count matrix (rows: target class, columns: predicted class, last column:
    predictions outside ``0..K-1``) with ``torch.bincount`` over the valid pixels of every ``update``."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"MeanIoU: num_classes must be a positive int, got {num_classes!r}")
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise TypeError(f"MeanIoU: ignore_index must be an int, got {ignore_index!r}")
        if 0 <= ignore_index < num_classes:
            raise ValueError(
                f"MeanIoU: ignore_index={ignore_index} is one of the classes 0..{num_classes - 1}; "
                "it must lie outside them"
            )
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self._counts = torch.zeros(self.num_classes, self.num_classes + 1, dtype=torch.int64)

    def update(self, pred: LabelMap, target: LabelMap) -> None:
        """``pred``, ``target``: integer label maps ``[B, H, W]`` or ``[H, W]`` of the same shape.

        ``target`` holds ``0..K-1`` or ``ignore_index``; any other value is a ``ValueError`` (the usual cause
        is a dataset whose labels were not shifted by ``reduce_zero_label``).
        """
        pred = _as_label_tensor(pred, "pred")
        target = _as_label_tensor(target, "target")
        if pred.shape != target.shape:
            raise ValueError(
                f"MeanIoU.update: pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}; "
                "resize the prediction to the target's size before updating"
            )
        if pred.dim() not in (2, 3):
            raise ValueError(f"MeanIoU.update: expected [B, H, W] or [H, W] label maps, got shape {tuple(pred.shape)}")
        k = self.num_classes
        target = target.to(torch.int64).flatten()
        pred = pred.to(device=target.device, dtype=torch.int64).flatten()
        valid = target != self.ignore_index
        target, pred = target[valid], pred[valid]
        bad = (target < 0) | (target >= k)
        if bool(bad.any()):
            value = int(target[bad][0])
            raise ValueError(
                f"MeanIoU.update: target holds label {value}, outside 0..{k - 1} (num_classes={k}) and not "
                f"ignore_index={self.ignore_index}; check num_classes and the dataset's reduce_zero_label"
            )
        pred = torch.where((pred < 0) | (pred >= k), torch.full_like(pred, k), pred)
        counts = torch.bincount(target * (k + 1) + pred, minlength=k * (k + 1))
        self._counts += counts.view(k, k + 1).cpu()

    @property
    def confusion_matrix(self) -> torch.Tensor:
        """``[K, K]`` int64 counts of this process (rows: target, columns: prediction), not reduced across
        ranks; predictions outside ``0..K-1`` are left out (see ``invalid_predictions``)."""
        return self._counts[:, : self.num_classes].clone()

    @property
    def invalid_predictions(self) -> torch.Tensor:
        """``[K]`` int64: per target class, pixels whose prediction was outside ``0..K-1`` (this process)."""
        return self._counts[:, self.num_classes].clone()

    def _reduced_counts(self) -> torch.Tensor:
        return all_reduce_sum(self._counts.clone())

    def compute(self) -> dict[str, float | list[float]]:
        """``{"mIoU", "mAcc", "aAcc": float, "IoU", "Acc": list[float] of length K}``, fractions in [0, 1].

        Under ``torch.distributed`` every rank must call this (it all-reduces the counts); all get the same.
        """
        counts = self._reduced_counts().to(torch.float64)
        k = self.num_classes
        intersect = counts.diagonal()
        area_label = counts.sum(dim=1)
        area_pred = counts[:, :k].sum(dim=0)
        union = area_pred + area_label - intersect
        # 0/0 gives NaN in float64, which is exactly "class absent, excluded from the mean".
        iou = intersect / union
        acc = intersect / area_label
        total = float(area_label.sum())
        return {
            "mIoU": _nanmean(iou),
            "mAcc": _nanmean(acc),
            "aAcc": float(intersect.sum()) / total if total > 0 else math.nan,
            "IoU": [float(v) for v in iou],
            "Acc": [float(v) for v in acc],
        }


def pixel_agreement(first: list, second: list) -> float:
    """The share of pixels two lists of label maps ``[H, W]`` (e.g. an fp32 and an INT8 model's predictions of
    the same images) label alike, over all their pixels (``tools/export.py --int8``'s check)."""
    same = sum(int((np.asarray(a) == np.asarray(b)).sum()) for a, b in zip(first, second))
    return same / max(1, sum(np.asarray(a).size for a in first))
