"""Box conversions and (generalised) IoU. ``xyxy`` = (x0, y0, x1, y1), ``cxcywh`` = (cx, cy, w, h); the
last dimension holds the 4 coordinates, any leading dimensions ``[...]`` are kept. IoUs use continuous
coordinates (no +1), as COCOeval does."""
from __future__ import annotations

import torch


def box_cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` (cx, cy, w, h) -> ``[..., 4]`` (x0, y0, x1, y1)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` (x0, y0, x1, y1) -> ``[..., 4]`` (cx, cy, w, h)."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` xyxy -> ``[...]`` area ``(x1 - x0) * (y1 - y0)`` (negative for inverted boxes)."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairwise IoU of ``boxes1 [N, 4]`` and ``boxes2 [M, 4]`` (xyxy) -> ``(iou [N, M], union [N, M])``."""
    area1, area2 = box_area(boxes1), box_area(boxes2)
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return inter / union, union


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise generalised IoU (Rezatofighi et al. 2019) of ``boxes1 [N, 4]`` and ``boxes2 [M, 4]`` (xyxy)
    -> ``[N, M]`` in [-1, 1]: ``IoU - (hull - union) / hull`` with ``hull`` the smallest enclosing box.

    Inverted boxes (x1 < x0 or y1 < y0) are a ``ValueError``: they give meaningless values, and in
    training they mean the predicted boxes went wrong (NaN, or a bad cxcywh conversion). Boxes of zero
    area are allowed; two identical points give 0/0 = NaN, as in DETR.
    """
    for name, boxes in (("boxes1", boxes1), ("boxes2", boxes2)):
        if boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"generalized_box_iou: {name} must be [N, 4] xyxy, got shape {tuple(boxes.shape)}")
        if not bool((boxes[:, 2:] >= boxes[:, :2]).all()):
            raise ValueError(f"generalized_box_iou: {name} has boxes with x1 < x0 or y1 < y0 (or NaN); expected xyxy")
    iou, union = box_iou(boxes1, boxes2)
    top_left = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    hull = wh[..., 0] * wh[..., 1]
    return iou - (hull - union) / hull
