"""Inference post-processing: Deformable-DETR outputs -> scored boxes in image pixels, ready for
``CocoEvaluator.update`` (what ``predict`` and evaluation run after the network)."""
from __future__ import annotations

from typing import Mapping

import torch

from tasks.detection.box_ops import box_cxcywh_to_xyxy


@torch.no_grad()
def post_process(outputs: Mapping, target_sizes: torch.Tensor, top_k: int = 100) -> list[dict[str, torch.Tensor]]:
    """Deformable-DETR's ``PostProcess``: the ``top_k`` best (query, class) pairs of each image, no threshold, no NMS.

    Args:
        outputs: ``"pred_logits"`` ``Tensor[B, Q, K]``, ``"pred_boxes"`` ``Tensor[B, Q, 4]`` normalised cxcywh.
        target_sizes: ``Tensor[B, 2]`` rows ``(h, w)``: the size to scale boxes to (the original image's for COCO
            evaluation).
        top_k: pairs kept per image, taken over all ``Q·K`` sigmoid scores (a query may appear with several
            classes); at most ``Q·K``.

    Returns:
        ``B`` dicts with ``"scores"`` ``Tensor[k]`` (descending), ``"labels"`` ``Tensor[k]`` int64 class ids
        (``index % K``; raw category ids when trained on them) and ``"boxes"`` ``Tensor[k, 4]`` xyxy pixels.
    """
    logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
    if logits.dim() != 3 or boxes.shape != (*logits.shape[:2], 4):
        raise ValueError(
            f"post_process: expected pred_logits [B, Q, K] and pred_boxes [B, Q, 4], got "
            f"{tuple(logits.shape)} and {tuple(boxes.shape)}"
        )
    target_sizes = torch.as_tensor(target_sizes, device=boxes.device)
    if target_sizes.shape != (logits.shape[0], 2):
        raise ValueError(f"post_process: target_sizes must be [B, 2] rows (h, w) with B={logits.shape[0]}, "
                         f"got shape {tuple(target_sizes.shape)}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"post_process: top_k must be a positive int, got {top_k!r}")
    batch, queries, classes = logits.shape
    scores, index = logits.sigmoid().reshape(batch, queries * classes).topk(min(top_k, queries * classes), dim=1)
    query, labels = index // classes, index % classes
    xyxy = box_cxcywh_to_xyxy(boxes).gather(1, query.unsqueeze(-1).expand(-1, -1, 4))
    height, width = target_sizes.to(xyxy.dtype).unbind(1)
    xyxy = xyxy * torch.stack([width, height, width, height], dim=1)[:, None, :]
    return [{"scores": s, "labels": l, "boxes": b} for s, l, b in zip(scores, labels, xyxy)]
