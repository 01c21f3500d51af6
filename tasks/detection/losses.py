"""Deformable-DETR's set criterion: Hungarian matching, then sigmoid focal loss on the classes and L1 + GIoU on
the matched boxes, for the final decoder output, every auxiliary decoder output and (two-stage) the encoder
proposals.

Loss keys: ``loss_ce``, ``loss_bbox``, ``loss_giou`` for the final output, the same with ``_0`` … ``_{L-2}``
for ``aux_outputs[i]`` and ``_enc`` for ``enc_outputs``; ``cardinality_error`` (final output only) is
logged, never weighted. ``weighted_total(losses, weight_dict)`` is what the engine back-propagates.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import torch
from torch import nn

from tasks.common.amp import float32
from tasks.common.distributed import all_reduce_sum, is_distributed
from tasks.detection.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from tasks.detection.matcher import FOCAL_GAMMA, HungarianMatcher

LOSS_TERMS = {"labels": ("loss_ce",), "boxes": ("loss_bbox", "loss_giou")}
_SUFFIX = re.compile(r"^(loss_[a-z]+?)(_\d+|_enc)?$")


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Elementwise focal loss (Lin et al. 2017) of ``logits`` against 0/1 ``targets`` of the same shape:
    ``BCE-with-logits · (1 - p_t)^γ · α_t`` (``α_t = α`` on positives, ``1 - α`` on negatives; ``alpha < 0``
    turns the weighting off), unreduced, as ``torchvision.ops.sigmoid_focal_loss(reduction="none")``."""
    prob = logits.sigmoid()
    ce = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


def weighted_total(losses: Mapping[str, torch.Tensor], weight_dict: Mapping[str, float]) -> torch.Tensor:
    """``Σ weight · loss`` over the ``loss_*`` entries of ``losses``. A suffixed key (``loss_ce_3``,
    ``loss_bbox_enc``) takes its own weight if ``weight_dict`` has one, otherwise its base term's
    (``loss_ce``); a ``loss_*`` entry with neither is a ``KeyError``. Other entries are logged only."""
    total = None
    for key, value in losses.items():
        match = _SUFFIX.match(key)
        if not match:
            continue
        weight = weight_dict.get(key, weight_dict.get(match.group(1)))
        if weight is None:
            raise KeyError(f"weighted_total: no weight for {key!r} (nor {match.group(1)!r}) in {sorted(weight_dict)}")
        total = value * weight if total is None else total + value * weight
    if total is None:
        raise ValueError(f"weighted_total: no loss_* entries in {sorted(losses)}")
    return total


class SetCriterion(nn.Module):
    """Deformable-DETR's losses for ``outputs`` (see ``forward``) against per-image targets.

    - ``loss_ce``: sigmoid focal loss (α ``focal_alpha``, γ 2) against one-hot targets, where matched queries
      have a 1 at their target's class and unmatched queries are all zeros (no "no-object" logit), summed
      over every (image, query, class) and divided by ``num_boxes``. (The original divides by
      ``num_boxes`` after a mean over queries, then multiplies by the number of queries: the same.)
    - ``loss_bbox``: L1 between matched normalised cxcywh boxes, summed / ``num_boxes``.
    - ``loss_giou``: ``1 - GIoU`` of the matched boxes (as xyxy), summed / ``num_boxes``.

    ``num_boxes`` is the number of target boxes in the batch, summed over processes and divided by the world
    size (the mean per process), at least 1; the same value divides every output's losses. Each auxiliary
    output is matched on its own; the encoder proposals are matched to the same boxes with every label set to
    0 (class-agnostic), as in the original two-stage model.

    ``weight_dict`` maps ``loss_ce``, ``loss_bbox``, ``loss_giou`` (optionally suffixed keys too) to weights
    (Deformable-DETR: 2, 5, 2; Hugging Face uses 1 for ``loss_ce``); it is checked here and used by
    ``weighted_total``.
    """

    def __init__(self, num_classes: int, matcher: HungarianMatcher, weight_dict: Mapping[str, float],
                 losses: Sequence[str] = ("labels", "boxes"), focal_alpha: float = 0.25):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"SetCriterion: num_classes must be a positive int, got {num_classes!r}")
        unknown = [name for name in losses if name not in LOSS_TERMS]
        if unknown or not losses:
            raise ValueError(f"SetCriterion: losses must be a non-empty subset of {tuple(LOSS_TERMS)}, got {tuple(losses)}")
        for key in weight_dict:
            match = _SUFFIX.match(key)
            if not match or match.group(1) not in {t for terms in LOSS_TERMS.values() for t in terms}:
                raise ValueError(f"SetCriterion: unknown weight_dict key {key!r}; terms are loss_ce, loss_bbox, loss_giou "
                                 "(optionally with a _<i> or _enc suffix)")
        missing = [t for name in losses for t in LOSS_TERMS[name] if t not in weight_dict]
        if missing:
            raise ValueError(f"SetCriterion: weight_dict has no weight for {missing}")
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = dict(weight_dict)
        self.losses = tuple(losses)
        self.focal_alpha = focal_alpha

    def loss_labels(self, logits: torch.Tensor, targets: Sequence[dict], indices, num_boxes: float) -> torch.Tensor:
        """``logits [B, Q, K]``; ``indices`` from the matcher -> scalar focal loss."""
        onehot = torch.zeros_like(logits)
        for b, (query, target) in enumerate(indices):
            onehot[b, query.to(logits.device), targets[b]["labels"][target].to(logits.device).long()] = 1
        return sigmoid_focal_loss(logits, onehot, self.focal_alpha).sum() / num_boxes

    def loss_boxes(self, boxes: torch.Tensor, targets: Sequence[dict], indices, num_boxes: float) -> dict:
        """``boxes [B, Q, 4]`` normalised cxcywh -> ``{"loss_bbox", "loss_giou"}`` scalars."""
        src = torch.cat([boxes[b, query.to(boxes.device)] for b, (query, _) in enumerate(indices)])
        tgt = torch.cat([targets[b]["boxes"][target].to(boxes) for b, (_, target) in enumerate(indices)])
        giou = generalized_box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt)).diagonal()
        return {
            "loss_bbox": (src - tgt).abs().sum() / num_boxes,
            "loss_giou": (1 - giou).sum() / num_boxes,
        }

    def _losses(self, outputs: Mapping, targets: Sequence[dict], num_boxes: float, suffix: str) -> dict:
        indices = self.matcher(outputs, targets)
        losses = {}
        if "labels" in self.losses:
            losses["loss_ce"] = self.loss_labels(outputs["pred_logits"], targets, indices, num_boxes)
        if "boxes" in self.losses:
            losses.update(self.loss_boxes(outputs["pred_boxes"], targets, indices, num_boxes))
        return {key + suffix: value for key, value in losses.items()}

    @torch.no_grad()
    def cardinality_error(self, logits: torch.Tensor, targets: Sequence[dict]) -> torch.Tensor:
        """Mean over images of ``|#queries with a class score > 0.5 - #targets|`` (for the log; the original's
        argmax rule is a leftover from DETR's softmax and counts nearly every query)."""
        predicted = (logits.sigmoid().amax(dim=-1) > 0.5).sum(dim=1).float()
        expected = torch.tensor([float(len(t["labels"])) for t in targets], device=logits.device)
        return (predicted - expected).abs().mean()

    def num_boxes(self, targets: Sequence[dict], device: torch.device) -> float:
        count = torch.tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        if is_distributed():
            count = all_reduce_sum(count) / torch.distributed.get_world_size()
        return max(float(count), 1.0)

    @float32
    def forward(self, outputs: Mapping, targets: Sequence[dict]) -> dict[str, torch.Tensor]:
        """Args:
            outputs: ``"pred_logits"`` ``Tensor[B, Q, K]`` (K = ``num_classes``), ``"pred_boxes"`` ``Tensor[B, Q, 4]``
                normalised cxcywh; optionally ``"aux_outputs"``: a list of dicts with the same two keys (the
                earlier decoder layers), and ``"enc_outputs"``: a dict with the same two keys (two-stage
                proposals, any number of logits channels ≥ 1, channel 0 scored).
            targets: ``B`` dicts with ``"labels"`` ``Tensor[T_i]`` int64 in ``0..K-1`` and ``"boxes"``
                ``Tensor[T_i, 4]`` normalised cxcywh.

        Returns: ``{loss key: scalar Tensor}`` (see the module docstring).
        """
        logits = outputs["pred_logits"]
        if logits.dim() != 3 or logits.shape[-1] != self.num_classes:
            raise ValueError(f"SetCriterion: pred_logits must be [B, Q, {self.num_classes}], got {tuple(logits.shape)}")
        num_boxes = self.num_boxes(targets, logits.device)
        losses = self._losses(outputs, targets, num_boxes, "")
        for i, aux in enumerate(outputs.get("aux_outputs") or ()):
            losses.update(self._losses(aux, targets, num_boxes, f"_{i}"))
        if outputs.get("enc_outputs") is not None:
            binary = [{**t, "labels": torch.zeros_like(t["labels"])} for t in targets]
            losses.update(self._losses(outputs["enc_outputs"], binary, num_boxes, "_enc"))
        losses["cardinality_error"] = self.cardinality_error(logits, targets)
        return losses
