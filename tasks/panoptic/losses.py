"""Panoptic SegFormer's losses (the authors' ``PanformerHead.loss``), against the training batch's targets
(``labels`` contiguous: things ``0..T-1`` first, then stuff ``T..T+S-1``; ``masks`` bool at the padded size;
``boxes`` normalised cxcywh).

Keys (unweighted; ``"loss"`` is the weighted total that is back-propagated):

- ``loss_ce``, ``loss_bbox``, ``loss_giou``: the location decoder's last layer (focal / L1 / GIoU, the query
  filter's first, one-to-one round); ``_0`` … ``_{L-2}``: its earlier layers, each Hungarian-matched on its own;
- ``loss_mask_things``: dice of the final thing masks of the queries the mask-aware matcher assigned;
  ``_0`` … ``_3``: the same for each mask-decoder layer's masks;
- ``loss_mask_stuff``: dice of the final stuff masks (class k's query against class k's mask, only where the
  class is present); ``_0`` … ``_5``: each layer's;
- ``loss_cls_stuff``: focal loss of "stuff class present" of the last stuff layer; ``_0`` … ``_4`` the others;
- ``things_ratio`` (logged only): the weight ``N_th / (N_th + N_st)`` every thing term carries (stuff terms
  carry ``1 - things_ratio``).

Normalisers (``PanopticCriterion.normalisers``): thing terms divide by ``N_th``, stuff terms by ``N_st``, the
target counts of the whole optimizer step (every process, every accumulated micro-batch) divided by the number
of (process, micro-batch) pairs: the authors' all-reduced per-GPU average, so that accumulating micro-batches in
one process gives the gradients of running them on more processes.

Weights (the authors'): focal 2, L1 5, GIoU 2, dice 2, stuff presence focal 2 × 2 = 4.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from tasks.common.distributed import all_reduce_sum, is_distributed
from tasks.detection.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from tasks.detection.losses import sigmoid_focal_loss
from tasks.detection.matcher import HungarianMatcher

from .matcher import FilterResult, MaskHungarianMatcher, QueryFilter

DEFAULT_WEIGHTS = {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_mask_things": 2.0,
                   "loss_mask_stuff": 2.0, "loss_cls_stuff": 4.0}
_STUFF_TERMS = ("loss_mask_stuff", "loss_cls_stuff")


def dice_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per mask ``1 - 2 Σ p t / (Σ p² + eps + Σ t² + eps)``: ``pred``, ``target`` ``[N, H, W]`` -> ``[N]``."""
    p, t = pred.flatten(1), target.flatten(1)
    return 1 - 2 * (p * t).sum(1) / ((p * p).sum(1) + eps + (t * t).sum(1) + eps)


def mask_dice(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, count: float) -> torch.Tensor:
    """The authors' mask loss: ``pred [N, h, w]`` upsampled x2 (bilinear), ``target [N, H, W]`` resized bilinearly
    to that size, dice per mask times ``weight [N]``, summed, divided by ``count``."""
    if pred.shape[0] == 0:
        return pred.sum() * 0
    pred = F.interpolate(pred[None], scale_factor=2.0, mode="bilinear", align_corners=False)[0]
    target = F.interpolate(target[None].to(pred.dtype), size=pred.shape[-2:], mode="bilinear", align_corners=False)[0]
    return (dice_loss(pred, target) * weight).sum() / count


class QuerySelector:
    """The ``select`` callable the model's forward takes in training: runs the query filter on the last
    location-decoder layer against ``thing_targets`` and keeps the results (``results``) for the loss."""

    def __init__(self, query_filter: QueryFilter, thing_targets: Sequence[Mapping]):
        self.query_filter, self.thing_targets = query_filter, thing_targets
        self.results: list[FilterResult] | None = None

    def __call__(self, outputs: Mapping) -> list[torch.Tensor]:
        logits, boxes = outputs["pred_logits"].detach(), outputs["pred_boxes"].detach()
        self.results = [self.query_filter(logits[b], boxes[b], t["labels"], t["boxes"])
                        for b, t in enumerate(self.thing_targets)]
        return [r.selected for r in self.results]


class PanopticCriterion(torch.nn.Module):
    """``num_things``/``num_stuff``: T and S. ``weights``: per base term (``DEFAULT_WEIGHTS``' keys).

    Use: ``selector = criterion.selector(targets)``; ``outputs = model(images, pixel_mask, select=selector)``;
    ``losses = criterion(outputs, targets, selector)``.
    """

    def __init__(self, num_things: int, num_stuff: int, *, weights: Mapping[str, float] | None = None,
                 matcher: HungarianMatcher | None = None, mask_matcher: MaskHungarianMatcher | None = None,
                 max_pos: int = 1, focal_alpha: float = 0.25):
        super().__init__()
        weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        unknown = sorted(set(weights) - set(DEFAULT_WEIGHTS))
        missing = sorted(set(DEFAULT_WEIGHTS) - set(weights))
        if unknown or missing:
            raise ValueError(f"PanopticCriterion: weights must have exactly {sorted(DEFAULT_WEIGHTS)}; "
                             f"unknown {unknown}, missing {missing}")
        self.num_things, self.num_stuff, self.weights = num_things, num_stuff, weights
        self.matcher = matcher or HungarianMatcher(2.0, 5.0, 2.0, focal_alpha)
        self.mask_matcher = mask_matcher or MaskHungarianMatcher(4.0, 5.0, 2.0, 2.0, focal_alpha)
        self.query_filter = QueryFilter(self.matcher, max_pos)
        self.focal_alpha = focal_alpha

    def split(self, targets: Sequence[Mapping]) -> tuple[list[dict], list[dict]]:
        """Per image ``(things, stuff)`` target dicts; things with an empty box are dropped (as the authors do)."""
        things, stuff = [], []
        for t in targets:
            labels = t["labels"].long()
            is_thing = labels < self.num_things
            wh = t["boxes"][:, 2:]
            keep = is_thing & (wh > 0).all(1)
            things.append({"labels": labels[keep], "boxes": t["boxes"][keep], "masks": t["masks"][keep]})
            stuff.append({"labels": labels[~is_thing] - self.num_things, "masks": t["masks"][~is_thing]})
        return things, stuff

    def normalisers(self, batches: Sequence[Sequence[Mapping]]) -> tuple[float, float]:
        """``(N_th, N_st)`` of a step made of ``batches`` (each a list of target dicts; several: the micro-batches
        accumulated into one step): the counts summed over the batches and processes, divided by the number of
        batches times processes, each at least 1. A collective call in a process group: every process calls it."""
        counts = torch.zeros(2, dtype=torch.float64)
        for targets in batches:
            things, stuff = self.split(targets)
            counts += torch.tensor([sum(len(t["labels"]) for t in things), sum(len(t["labels"]) for t in stuff)])
        units = len(batches)
        if is_distributed():
            counts = all_reduce_sum(counts)
            units *= torch.distributed.get_world_size()
        n_th, n_st = (counts / max(units, 1)).tolist()
        return max(n_th, 1.0), max(n_st, 1.0)

    def selector(self, targets: Sequence[Mapping]) -> QuerySelector:
        return QuerySelector(self.query_filter, self.split(targets)[0])

    def _detection(self, logits, boxes, things, indices, count: float) -> dict:
        onehot = torch.zeros_like(logits)
        src, tgt = [], []
        for b, (rows, cols) in enumerate(indices):
            rows = rows.to(logits.device)
            onehot[b, rows, things[b]["labels"][cols].to(logits.device)] = 1
            src.append(boxes[b, rows])
            tgt.append(things[b]["boxes"][cols].to(boxes))
        src, tgt = torch.cat(src), torch.cat(tgt)
        giou = generalized_box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt)).diagonal()
        return {"loss_ce": sigmoid_focal_loss(logits, onehot, self.focal_alpha).sum() / count,
                "loss_bbox": (src - tgt).abs().sum() / count, "loss_giou": (1 - giou).sum() / count}

    def _things(self, outputs, things, filtered: list[FilterResult], count: float) -> dict:
        """Mask-aware matching among the filtered queries, then dice on the final and every layer's masks."""
        index, final = outputs["thing_index"], outputs["thing_masks"]
        logits, boxes = outputs["pred_logits"].detach(), outputs["pred_boxes"].detach()
        rows_all, targets = [], []
        for b, t in enumerate(things):
            n = len(filtered[b].selected)
            queries = index[b, :n]
            rows, cols = self.mask_matcher(logits[b, queries], boxes[b, queries], final[b, :n].detach(),
                                           t["labels"], t["boxes"], t["masks"])
            rows_all.append(rows.to(final.device) + b * index.shape[1])
            targets.append(t["masks"][cols.to(t["masks"].device)])
        rows = torch.cat(rows_all)
        target = torch.cat(targets) if targets else final.new_zeros(0, *final.shape[-2:])
        weight = torch.ones(len(rows), device=final.device)
        losses = {}
        for suffix, masks in [("", final)] + [(f"_{i}", m) for i, m in enumerate(outputs["thing_aux_masks"])]:
            losses[f"loss_mask_things{suffix}"] = mask_dice(masks.flatten(0, 1)[rows], target, weight, count)
        return losses

    def _stuff(self, outputs, stuff, count: float) -> dict:
        masks = outputs["stuff_masks"]
        B, S = masks.shape[:2]
        present = torch.zeros(B, S, device=masks.device)
        target = torch.zeros(B, S, *stuff[0]["masks"].shape[-2:], device=masks.device) if B else None
        for b, t in enumerate(stuff):
            for label, mask in zip(t["labels"].tolist(), t["masks"]):
                present[b, label] = 1
                target[b, label] = torch.maximum(target[b, label], mask.to(target.dtype))
        losses = {}
        weight = present.flatten()
        for suffix, m in [("", masks)] + [(f"_{i}", m) for i, m in enumerate(outputs["stuff_aux_masks"])]:
            losses[f"loss_mask_stuff{suffix}"] = mask_dice(m.flatten(0, 1), target.flatten(0, 1), weight, count)
        for suffix, logits in [("", outputs["stuff_logits"])] + [
                (f"_{i}", x) for i, x in enumerate(outputs["stuff_aux_logits"])]:
            losses[f"loss_cls_stuff{suffix}"] = sigmoid_focal_loss(logits, present, self.focal_alpha).sum() / count
        return losses

    def forward(self, outputs: Mapping, targets: Sequence[Mapping], selector: QuerySelector,
                normalisers: tuple[float, float] | None = None) -> dict:
        """``normalisers``: the step's ``(N_th, N_st)`` (``normalisers``); None: this batch's own."""
        if selector.results is None:
            raise ValueError("PanopticCriterion: the selector was not run; pass select=selector to the model")
        things, stuff = self.split(targets)
        device = outputs["pred_logits"].device
        things = [{k: v.to(device) for k, v in t.items()} for t in things]
        stuff = [{k: v.to(device) for k, v in t.items()} for t in stuff]
        n_th, n_st = self.normalisers([targets]) if normalisers is None else normalisers
        first = [(r.rows, r.cols) for r in selector.results]
        losses = self._detection(outputs["pred_logits"], outputs["pred_boxes"], things, first, n_th)
        for i, aux in enumerate(outputs.get("aux_outputs") or ()):
            indices = self.matcher(aux, things)
            for key, value in self._detection(aux["pred_logits"], aux["pred_boxes"], things, indices, n_th).items():
                losses[f"{key}_{i}"] = value
        losses.update(self._things(outputs, things, selector.results, n_th))
        losses.update(self._stuff(outputs, stuff, n_st))
        ratio = n_th / (n_th + n_st)
        total = sum(self.weights[_base(k)] * (1 - ratio if _base(k) in _STUFF_TERMS else ratio) * v
                    for k, v in losses.items())
        return {"loss": total, **losses, "things_ratio": torch.tensor(ratio, device=device)}


def _base(key: str) -> str:
    head, _, tail = key.rpartition("_")
    return head if tail.isdigit() else key
