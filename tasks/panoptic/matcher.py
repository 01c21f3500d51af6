"""Panoptic SegFormer's two-stage matching of thing queries.

1. ``QueryFilter``: Hungarian matching of the location decoder's last layer against the thing targets (focal
   2, L1 5, GIoU 2); the matched queries go to the mask decoder, one per object (``max_pos=1``, what the
   authors' released code does: their ``HungarianAssigner_filter`` is configured with ``max_pos=3`` but leaves
   its loop after the first round). ``max_pos > 1`` repeats the matching ``min(max_pos, Q // T)`` times with
   the rows matched so far removed, as an older version of their assigner did: up to ``max_pos`` queries per
   object reach the mask decoder, the extra ones without a mask target (a deviation from the release). The
   first round is the one-to-one assignment of that layer's detection losses.
2. ``MaskHungarianMatcher``: among the kept queries, Hungarian matching on the same costs (focal doubled: 4)
   plus the dice cost of the mask decoder's final masks; it decides which thing masks are trained on what.

All costs come from ``tasks.detection.matcher.HungarianMatcher.cost_matrix``; everything runs without
gradients, solved by scipy's ``linear_sum_assignment`` on CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from tasks.detection.matcher import HungarianMatcher

_EMPTY = torch.zeros(0, dtype=torch.int64)


@dataclass
class FilterResult:
    """One image: ``rows``/``cols`` the first round's one-to-one assignment (query ``rows[k]`` ↔ target
    ``cols[k]``, rows sorted); ``selected`` every query matched in any round (sorted, distinct)."""

    rows: torch.Tensor
    cols: torch.Tensor
    selected: torch.Tensor


def repeated_assignment(cost: np.ndarray, rounds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``rounds`` Hungarian assignments of ``cost [Q, T]``, each among the rows no earlier round took.
    Returns one ``(rows, cols)`` pair per round (rows index ``cost``'s rows, sorted)."""
    free = np.arange(cost.shape[0])
    out = []
    for _ in range(rounds):
        if len(free) == 0:
            break
        rows, cols = linear_sum_assignment(cost[free])
        taken = free[rows]
        order = np.argsort(taken)
        out.append((taken[order], cols[order]))
        free = np.setdiff1d(free, taken)
    return out


class QueryFilter:
    """``filter(logits [Q, T], boxes [Q, 4], labels [M], target_boxes [M, 4]) -> FilterResult`` for one image
    (normalised cxcywh boxes, contiguous thing labels). ``max_pos``: most queries kept per object (1, the
    authors' released behaviour: the one-to-one assignment only; see the module docstring for > 1)."""

    def __init__(self, matcher: HungarianMatcher, max_pos: int = 1):
        if isinstance(max_pos, bool) or not isinstance(max_pos, int) or max_pos < 1:
            raise ValueError(f"QueryFilter: max_pos must be a positive int, got {max_pos!r}")
        self.matcher, self.max_pos = matcher, max_pos

    @torch.no_grad()
    def __call__(self, logits, boxes, labels, target_boxes) -> FilterResult:
        if len(labels) == 0:
            return FilterResult(_EMPTY, _EMPTY, _EMPTY)
        cost = self.matcher.cost_matrix(logits, boxes, labels.long(), target_boxes).cpu().double().numpy()
        if not np.isfinite(cost).all():
            raise ValueError("QueryFilter: the matching cost holds NaN/inf (non-finite logits or boxes)")
        rounds = repeated_assignment(cost, min(self.max_pos, max(cost.shape[0] // len(labels), 1)))
        rows, cols = (torch.as_tensor(a, dtype=torch.int64) for a in rounds[0])
        selected = torch.as_tensor(np.sort(np.concatenate([r for r, _ in rounds])), dtype=torch.int64)
        return FilterResult(rows, cols, selected)


def dice_cost(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """``1 - 2 Σ p t / (Σ p² + eps + Σ t² + eps)`` for every pair: ``pred [N, P]``, ``target [M, P]`` -> ``[N, M]``."""
    inter = pred @ target.T
    return 1 - 2 * inter / ((pred * pred).sum(1)[:, None] + eps + (target * target).sum(1)[None, :] + eps)


class MaskHungarianMatcher:
    """One-to-one matching of the filtered thing queries to the thing targets with masks in the cost:
    ``cost_class`` · focal + ``cost_bbox`` · L1 + ``cost_giou`` · (−GIoU) + ``cost_dice`` · dice.

    ``__call__(logits [N, T], boxes [N, 4], masks [N, h, w], labels [M], target_boxes [M, 4],
    target_masks [M, H, W]) -> (rows, cols)`` int64 CPU tensors (rows sorted); the targets are resized
    bilinearly to ``(h, w)`` for the dice cost, as the authors do.
    """

    def __init__(self, cost_class: float = 4.0, cost_bbox: float = 5.0, cost_giou: float = 2.0,
                 cost_dice: float = 2.0, focal_alpha: float = 0.25):
        if not isinstance(cost_dice, (int, float)) or cost_dice < 0:
            raise ValueError(f"MaskHungarianMatcher: cost_dice must be a number >= 0, got {cost_dice!r}")
        self.boxes = HungarianMatcher(cost_class, cost_bbox, cost_giou, focal_alpha)
        self.cost_dice = float(cost_dice)

    def cost_matrix(self, logits, boxes, masks, labels, target_boxes, target_masks) -> torch.Tensor:
        cost = self.boxes.cost_matrix(logits, boxes, labels.long(), target_boxes)
        if self.cost_dice:
            target = target_masks.to(masks.dtype)
            if target.shape[-2:] != masks.shape[-2:]:
                target = F.interpolate(target[None], size=masks.shape[-2:], mode="bilinear", align_corners=False)[0]
            cost = cost + self.cost_dice * dice_cost(masks.flatten(1), target.flatten(1))
        return cost

    @torch.no_grad()
    def __call__(self, logits, boxes, masks, labels, target_boxes, target_masks) -> tuple[torch.Tensor, torch.Tensor]:
        if len(labels) == 0 or logits.shape[0] == 0:
            return _EMPTY, _EMPTY
        cost = self.cost_matrix(logits, boxes, masks, labels, target_boxes, target_masks).cpu().double().numpy()
        if not np.isfinite(cost).all():
            raise ValueError("MaskHungarianMatcher: the matching cost holds NaN/inf (non-finite predictions)")
        rows, cols = linear_sum_assignment(cost)
        return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)
