"""Mask-wise merging (Panoptic SegFormer's inference): network outputs -> a panoptic map at the image's size.

For one image (the authors' ``get_bboxes`` and test loop):

1. things: sigmoid of the thing logits ``[Q, T]``, the ``max_per_image`` best (query, class) pairs (a query may
   appear with several classes); stuff: one candidate per stuff class, score = sigmoid of its presence logit;
2. every candidate mask (stride 8; cropped to the image's real region when padded) resized bilinearly straight
   to the output size; ``seg = mask > 0.5``; quality ``q = Σ(mask · seg) / (Σ seg + 1)``; score ← score · q²;
3. candidates by descending score: skipped below the quality threshold (things / stuff), when empty, or when
   more than the overlap threshold (things 0.4, stuff 0.2) of ``seg`` is already taken; otherwise they take
   the still-free pixels of ``seg``. Pixels nobody takes stay 0 (VOID); no area filter, no hole filling.

Segment ids are 1, 2, … in the order segments were placed; each kept thing is its own segment and a stuff
class is one segment.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class MergeOptions:
    """The authors' defaults (their PVTv2-B5 and Swin-L configs raise both quality thresholds to 0.3)."""

    max_per_image: int = 100
    quality_threshold_things: float = 0.25
    quality_threshold_stuff: float = 0.25
    overlap_threshold_things: float = 0.4
    overlap_threshold_stuff: float = 0.2


@torch.no_grad()
def candidates(thing_logits, thing_masks, stuff_logits, stuff_masks, max_per_image: int = 100):
    """``(scores [K], labels [K] contiguous, masks [K, h, w])``: the top (query, class) thing pairs then every
    stuff class (label ``T + k``). ``thing_logits [Q, T]``, ``thing_masks [Q, h, w]``, ``stuff_logits [S]``,
    ``stuff_masks [S, h, w]``."""
    Q, T = thing_logits.shape
    scores, index = thing_logits.sigmoid().flatten().topk(min(max_per_image, Q * T))
    query, labels = index // T, index % T
    stuff_labels = torch.arange(T, T + stuff_logits.shape[0], device=labels.device)
    return (torch.cat([scores, stuff_logits.sigmoid()]), torch.cat([labels, stuff_labels]),
            torch.cat([thing_masks[query], stuff_masks]))


@torch.no_grad()
def merge(scores, labels, masks, num_things: int, size: tuple[int, int], category_ids: Sequence[int],
          options: MergeOptions = MergeOptions()) -> tuple[torch.Tensor, list[dict]]:
    """Steps 2-3 of the module docstring. ``masks [K, h, w]`` are resized to ``size`` (H, W); ``category_ids``
    maps a contiguous label to the dataset's category id. Returns ``(panoptic int32 [H, W], segments)`` with
    segments ``{"id", "category_id", "isthing", "score", "label"}`` (``label``: the contiguous class, which
    indexes the model's ``class_names``)."""
    masks = F.interpolate(masks[None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0]
    seg = masks > 0.5
    area = seg.flatten(1).sum(1)
    quality = (masks * seg).flatten(1).sum(1) / (area + 1)
    scores = scores * quality**2
    order = torch.sort(scores, descending=True).indices
    panoptic = torch.zeros(tuple(size), dtype=torch.int32, device=masks.device)
    segments = []
    for k in order.tolist():
        thing = int(labels[k]) < num_things
        if float(scores[k]) < (options.quality_threshold_things if thing else options.quality_threshold_stuff):
            continue
        mask = seg[k]
        mask_area = int(area[k])
        taken = int((mask & (panoptic > 0)).sum())
        limit = options.overlap_threshold_things if thing else options.overlap_threshold_stuff
        if mask_area == 0 or taken / mask_area > limit:
            continue
        segment_id = len(segments) + 1
        panoptic[mask & (panoptic == 0)] = segment_id
        segments.append({"id": segment_id, "category_id": int(category_ids[int(labels[k])]), "isthing": thing,
                         "score": float(scores[k]), "label": int(labels[k])})
    return panoptic, segments


def real_region(masks: torch.Tensor, image_size: tuple[int, int], input_size: tuple[int, int]) -> torch.Tensor:
    """Crop stride-8 ``masks [..., h, w]`` of a padded input ``input_size`` to the part covering the image's
    ``image_size`` (the rows/columns a nearest resize of the padding mask marks real, as the model does)."""
    (h, w), (H, W) = image_size, input_size
    if (h, w) == (H, W):
        return masks
    mh, mw = masks.shape[-2:]
    rows = int((torch.arange(mh) * H / mh).floor().lt(h).sum())  # nearest: source row floor(i * H / mh)
    cols = int((torch.arange(mw) * W / mw).floor().lt(w).sum())
    return masks[..., :rows, :cols]


@torch.no_grad()
def post_process(outputs, image_sizes, output_sizes, input_size, num_things: int, category_ids: Sequence[int],
                 options: MergeOptions = MergeOptions()) -> list[tuple[torch.Tensor, list[dict]]]:
    """A batch of model outputs (evaluation: all Q queries decoded) -> one ``(panoptic, segments)`` per image.
    ``image_sizes``: each image's real (h, w) in the input; ``output_sizes``: the (H, W) to merge at (the
    original image's); ``input_size``: the padded batch (H, W)."""
    results = []
    for b in range(outputs["pred_logits"].shape[0]):
        scores, labels, masks = candidates(outputs["pred_logits"][b], outputs["thing_masks"][b],
                                           outputs["stuff_logits"][b], outputs["stuff_masks"][b], options.max_per_image)
        masks = real_region(masks, tuple(image_sizes[b]), tuple(input_size))
        results.append(merge(scores, labels, masks, num_things, tuple(output_sizes[b]), category_ids, options))
    return results
