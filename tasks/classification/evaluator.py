"""Top-k accuracy over a whole dataset, per class on request, summed across processes.

An image counts as correct at ``k`` when its target is among the ``k`` highest-scoring classes (ties broken
by ``torch.topk``, i.e. as in timm's ``accuracy`` and DeiT's evaluation). With fewer than ``k`` classes every
image is correct at ``k``. ``top1`` / ``top5`` are fractions over all images; per-class accuracy (top-1 recall
of each class at the smallest k, NaN for a class without images) is the mean over that class's images.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from tasks.common.distributed import all_reduce_sum


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"Accuracy.update: {name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    return x.detach()


class Accuracy:
    """``update(scores_or_predictions, target)`` over batches, then ``compute()``.

    ``topk``: the k of each ``top<k>`` key; ``per_class=True`` adds ``"per_class": list[float]`` (length K).
    """

    def __init__(self, num_classes: int, topk: Sequence[int] = (1, 5), per_class: bool = False):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"Accuracy: num_classes must be a positive int, got {num_classes!r}")
        if not topk or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in topk):
            raise ValueError(f"Accuracy: topk must be positive ints, got {topk!r}")
        self.num_classes, self.topk, self.per_class = num_classes, tuple(sorted(set(topk))), per_class
        self.reset()

    def reset(self) -> None:
        # Per target class: number of images, then hits at each k.
        self._counts = torch.zeros(self.num_classes, 1 + len(self.topk), dtype=torch.int64)

    def update(self, scores, target) -> None:
        """``scores``: float logits or probabilities ``[B, K]``; or integer predictions ``[B]`` (top-1 only)
        or ``[B, m]`` ranked best first (m >= the largest k). ``target``: integer labels ``[B]``."""
        scores, target = _as_tensor(scores, "scores"), _as_tensor(target, "target")
        if target.dim() != 1 or target.is_floating_point() or target.dtype == torch.bool:
            raise ValueError(f"Accuracy.update: target must be integer labels [B], got {target.dtype} {tuple(target.shape)}")
        if scores.shape[:1] != target.shape:
            raise ValueError(f"Accuracy.update: {tuple(scores.shape)} scores for {target.shape[0]} targets")
        bad = (target < 0) | (target >= self.num_classes)
        if bool(bad.any()):
            raise ValueError(f"Accuracy.update: target holds label {int(target[bad][0])}, outside 0..{self.num_classes - 1}")
        ranked = self._ranked(scores)
        target = target.to(ranked.device, torch.int64)
        hits = ranked == target[:, None]  # [B, m]
        columns = [torch.ones_like(target)] + [hits[:, :k].any(dim=1).long() for k in self.topk]
        per_image = torch.stack(columns, dim=1).cpu()
        self._counts.index_add_(0, target.cpu(), per_image)

    def _ranked(self, scores: torch.Tensor) -> torch.Tensor:
        """``[B, m]`` class indices, best first."""
        if scores.is_floating_point():
            if scores.dim() != 2 or scores.shape[1] != self.num_classes:
                raise ValueError(f"Accuracy.update: float scores must be [B, {self.num_classes}], got {tuple(scores.shape)}")
            return scores.topk(min(self.topk[-1], self.num_classes), dim=1).indices
        ranked = scores[:, None] if scores.dim() == 1 else scores
        if ranked.dim() != 2 or ranked.shape[1] < min(self.topk[-1], self.num_classes):
            raise ValueError(
                f"Accuracy.update: integer predictions {tuple(scores.shape)} cannot give top-{self.topk[-1]}; pass the "
                f"[B, K] scores, [B, >={self.topk[-1]}] ranked predictions, or use topk=(1,) with [B] predictions"
            )
        return ranked.long()

    def _reduced(self) -> torch.Tensor:
        return all_reduce_sum(self._counts.clone())

    def compute(self) -> dict[str, float | list[float]]:
        """``{"top1": float, "top5": float, ...}`` (+ ``"per_class"``); NaN before any update. Under
        ``torch.distributed`` every rank must call this (it all-reduces the counts); all get the same."""
        counts = self._reduced().to(torch.float64)
        total = float(counts[:, 0].sum())
        out: dict[str, float | list[float]] = {
            f"top{k}": float(counts[:, 1 + i].sum()) / total if total else math.nan for i, k in enumerate(self.topk)
        }
        if self.per_class:
            out["per_class"] = [float(v) for v in counts[:, 1] / counts[:, 0]]  # 0/0 -> NaN: class without images
        return out


def top1_agreement(first: list, second: list) -> float:
    """The share of images whose most probable class is the same in two lists of class probabilities ``[K]``
    (e.g. an fp32 and an INT8 model's, ``tools/export.py --int8``)."""
    same = [int(torch.as_tensor(a).argmax()) == int(torch.as_tensor(b).argmax()) for a, b in zip(first, second)]
    return sum(same) / max(1, len(same))
