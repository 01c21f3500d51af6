"""One-to-one assignment of predictions to ground-truth boxes (Deformable-DETR's Hungarian matcher)."""
from __future__ import annotations

from typing import Sequence

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from tasks.common.amp import float32
from tasks.detection.box_ops import box_cxcywh_to_xyxy, generalized_box_iou

FOCAL_GAMMA = 2.0


def _first_non_finite(x: torch.Tensor) -> str:
    """``"image b, query q"`` of the first NaN/inf in ``x [B, Q, ...]``, or ``""``."""
    bad = ~torch.isfinite(x.reshape(x.shape[0], x.shape[1], -1)).all(dim=-1)
    if not bool(bad.any()):
        return ""
    b, q = (int(i) for i in bad.nonzero()[0])
    return f"image {b}, query {q} ({int(bad.sum())} queries in all)"


class HungarianMatcher(nn.Module):
    """Matches each image's targets to its queries at minimum total cost, every query to at most one target.

    The cost of assigning query ``q`` to target ``t`` (all weights ≥ 0, not all 0):

    - ``cost_class``: the focal-loss gain of calling ``q`` the class of ``t``,
      ``α (1-p)^γ (-log p) - (1-α) p^γ (-log(1-p))`` with ``p = sigmoid(logit[q, label_t])``, γ = 2;
    - ``cost_bbox``: L1 distance between the normalised ``(cx, cy, w, h)`` boxes;
    - ``cost_giou``: minus the generalised IoU of the boxes (as xyxy).

    Costs are computed on the inputs' device and solved per image with scipy's ``linear_sum_assignment`` on
    CPU, without gradients. The defaults are Deformable-DETR's (class 2, L1 5, GIoU 2); Hugging Face's
    ``DeformableDetrHungarianMatcher`` defaults to class cost 1.
    """

    def __init__(self, cost_class: float = 2.0, cost_bbox: float = 5.0, cost_giou: float = 2.0, focal_alpha: float = 0.25):
        super().__init__()
        costs = {"cost_class": cost_class, "cost_bbox": cost_bbox, "cost_giou": cost_giou}
        if any(not isinstance(v, (int, float)) or v < 0 for v in costs.values()) or not any(costs.values()):
            raise ValueError(f"HungarianMatcher: costs must be numbers >= 0, not all 0; got {costs}")
        if not 0 <= focal_alpha <= 1:
            raise ValueError(f"HungarianMatcher: focal_alpha must be in [0, 1], got {focal_alpha}")
        self.cost_class, self.cost_bbox, self.cost_giou = float(cost_class), float(cost_bbox), float(cost_giou)
        self.focal_alpha = float(focal_alpha)

    def cost_matrix(self, logits: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                    target_boxes: torch.Tensor) -> torch.Tensor:
        """One image: ``logits [Q, K]``, ``boxes [Q, 4]`` and ``target_boxes [T, 4]`` (normalised cxcywh),
        ``labels [T]`` int64 in ``0..K-1`` -> ``[Q, T]`` float cost."""
        prob = logits.sigmoid()
        alpha = self.focal_alpha
        neg = (1 - alpha) * prob.pow(FOCAL_GAMMA) * -(1 - prob + 1e-8).log()
        pos = alpha * (1 - prob).pow(FOCAL_GAMMA) * -(prob + 1e-8).log()
        cost_class = pos[:, labels] - neg[:, labels]
        cost_bbox = torch.cdist(boxes, target_boxes.to(boxes.dtype), p=1)
        cost_giou = -generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(target_boxes.to(boxes.dtype)))
        return self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou

    @torch.no_grad()
    @float32
    def forward(self, outputs: dict, targets: Sequence[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Args:
            outputs: a dict with at least
                ``"pred_logits"``: ``Tensor[B, Q, K]`` classification logits (sigmoid, no "no-object" class),
                ``"pred_boxes"``: ``Tensor[B, Q, 4]`` boxes as normalised (cx, cy, w, h).
            targets: ``B`` dicts (one per image) with
                ``"labels"``: ``Tensor[T_i]`` int64 class ids in ``0..K-1`` (raw COCO category ids for COCO),
                ``"boxes"``: ``Tensor[T_i, 4]`` normalised (cx, cy, w, h); ``T_i`` may be 0.

        Returns:
            ``B`` pairs ``(index_i, index_j)`` of int64 CPU tensors of length ``min(Q, T_i)``: query
            ``index_i[k]`` is matched to target ``index_j[k]``; ``index_i`` is sorted.

        A NaN/inf in the predictions is a ``ValueError`` naming where (the usual cause: mixed precision
        overflowing in the model), rather than scipy's "matrix contains invalid numeric entries".
        """
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        if logits.dim() != 3 or boxes.shape != (*logits.shape[:2], 4):
            raise ValueError(
                f"HungarianMatcher: expected pred_logits [B, Q, K] and pred_boxes [B, Q, 4], got "
                f"{tuple(logits.shape)} and {tuple(boxes.shape)}"
            )
        if len(targets) != logits.shape[0]:
            raise ValueError(f"HungarianMatcher: {len(targets)} targets for a batch of {logits.shape[0]} images")
        for name, x in (("pred_boxes", boxes), ("pred_logits", logits)):
            where = _first_non_finite(x)
            if where:
                raise ValueError(f"HungarianMatcher: {name} contains NaN/inf at {where}")
        num_classes = logits.shape[-1]
        indices = []
        for b, target in enumerate(targets):
            labels, target_boxes = target["labels"].to(logits.device), target["boxes"].to(boxes.device)
            if labels.dim() != 1 or target_boxes.shape != (len(labels), 4):
                raise ValueError(
                    f"HungarianMatcher: targets[{b}] needs labels [T] and boxes [T, 4], got "
                    f"{tuple(labels.shape)} and {tuple(target_boxes.shape)}"
                )
            if len(labels) and not (0 <= int(labels.min()) and int(labels.max()) < num_classes):
                raise ValueError(
                    f"HungarianMatcher: targets[{b}]['labels'] holds {labels.tolist()}, outside 0..{num_classes - 1} "
                    f"(pred_logits has K={num_classes} classes; COCO's raw category ids need K=91)"
                )
            if not bool(torch.isfinite(target_boxes).all()):
                raise ValueError(f"HungarianMatcher: targets[{b}]['boxes'] contains NaN/inf")
            if len(labels) == 0:
                indices.append((torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)))
                continue
            cost = self.cost_matrix(logits[b], boxes[b], labels.long(), target_boxes)
            rows, cols = linear_sum_assignment(cost.cpu().double().numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices
