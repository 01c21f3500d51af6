"""Panoptic SegFormer's pipelines (the authors' = DETR's augmentation), each step a callable ``sample -> sample``.

Training (``train_pipeline``): ``SegmentTargets`` turns the ground truth into ``"mask"``, an int32 ``[H, W]`` map of
each pixel's target index (-1: VOID, crowd, or a dropped segment) with ``"labels"`` per target; then flip
(``RandomHorizontalFlip`` mirrors ``"mask"`` with the image), and with probability 1/2 each a multi-scale resize
(short side in 480..800 step 32, long side ≤ 1333) or a resize to short side 400/500/600 (long ≤ 4200), a random
crop of 384..600 and the multi-scale resize; ``Normalize``; ``ToTensor`` builds the per-target masks at the
network input size, drops the empty ones (a crop can cut a segment out), and computes each mask's box. The training
sample is::

    {"image": float32 [3, H, W] ImageNet-normalised, "labels": int64 [N] contiguous, "masks": bool [N, H, W],
     "boxes": float32 [N, 4] normalised (cx, cy, w, h) of each mask, "image_id", "orig_size": (H0, W0),
     "size": (H, W)}

Evaluation (``test_pipeline``): the image resized (short side 800, long ≤ 1333), normalised, as a tensor; the
ground truth stays at the original size: ``"panoptic"`` int32 ``[H0, W0]``, ``"segments_info"``, ``"file_name"``.

The resizes, the crop and ``Normalize`` are detection's (``tasks.detection.transforms``, which carries the
``"mask"`` target map through them); images are resized bilinearly (PIL), the target map by nearest neighbour (so
every pixel keeps one segment).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from tasks.common.transforms import Compose, RandomHorizontalFlip
from tasks.detection.transforms import DETR_SCALES, Normalize, RandomResize, RandomSelect, RandomSizeCrop, Resize

CROP_RESIZE_MAX = 4200  # the authors' long-side cap before the crop


@dataclass(frozen=True)
class SegmentTargets:
    """Ground truth -> ``"mask"`` (target index per pixel, -1 where none) and ``"labels"`` of the kept segments.

    Left out, as the authors do: crowd segments, and segments whose json box is under one pixel wide or high or
    whose area is ≤ 0. Removes ``"panoptic"``, ``"segments_info"`` and ``"file_name"``."""

    def __call__(self, sample: dict) -> dict:
        panoptic = sample.pop("panoptic")
        segments = sample.pop("segments_info")
        sample.pop("file_name", None)
        index = np.full(panoptic.shape, -1, np.int32)
        labels = []
        for segment, label in zip(segments, sample["labels"]):
            width, height = segment.get("bbox", (0, 0, 1, 1))[2:]
            if segment.get("iscrowd", 0) or segment.get("area", 1) <= 0 or width < 1 or height < 1:
                continue
            index[panoptic == segment["id"]] = len(labels)
            labels.append(label)
        sample["mask"] = index
        sample["labels"] = np.array(labels, np.int64)
        return sample


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """``bool [N, H, W]`` (no mask empty) -> float32 ``[N, 4]`` normalised ``(cx, cy, w, h)`` of each mask's
    pixel-edge box ``(x_min, y_min, x_max + 1, y_max + 1)``."""
    n, height, width = masks.shape
    if n == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    xs = torch.arange(width, dtype=torch.float32)
    ys = torch.arange(height, dtype=torch.float32)
    cols, rows = masks.any(dim=1), masks.any(dim=2)  # [N, W], [N, H]
    x0 = torch.where(cols, xs, torch.inf).amin(dim=1)
    x1 = torch.where(cols, xs, -torch.inf).amax(dim=1) + 1
    y0 = torch.where(rows, ys, torch.inf).amin(dim=1)
    y1 = torch.where(rows, ys, -torch.inf).amax(dim=1) + 1
    boxes = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=1)
    return boxes / torch.tensor([width, height, width, height], dtype=torch.float32)


@dataclass(frozen=True)
class ToTensor:
    """``image`` -> float32 ``[3, H, W]`` and ``"size"`` = ``(H, W)``. With ``"mask"`` (training): ``"masks"``
    bool ``[N, H, W]`` without the empty ones, their ``"labels"`` and ``"boxes"``. ``"panoptic"`` (evaluation) ->
    int32 tensor."""

    def __call__(self, sample: dict) -> dict:
        image = np.ascontiguousarray(sample["image"].transpose(2, 0, 1))
        sample["image"] = torch.from_numpy(image).to(torch.float32)
        sample["size"] = tuple(image.shape[1:])
        if "mask" in sample:
            index = torch.from_numpy(np.ascontiguousarray(sample.pop("mask"), dtype=np.int64))
            labels = torch.as_tensor(np.asarray(sample["labels"]), dtype=torch.int64)
            masks = index[None] == torch.arange(len(labels))[:, None, None]
            keep = masks.flatten(1).any(dim=1)
            sample["masks"], sample["labels"] = masks[keep], labels[keep]
            sample["boxes"] = masks_to_boxes(sample["masks"])
        if "panoptic" in sample:
            sample["panoptic"] = torch.from_numpy(np.ascontiguousarray(sample["panoptic"], dtype=np.int32))
        return sample


def train_pipeline(scales: Sequence[int] = DETR_SCALES, max_size: int = 1333,
                   crop_resize: Sequence[int] = (400, 500, 600), crop_size: tuple[int, int] = (384, 600),
                   crop_resize_max: Optional[int] = CROP_RESIZE_MAX) -> Compose:
    """The authors' training augmentation (DETR's); a toy config passes small ``scales``, ``crop_resize`` and
    ``crop_size``."""
    scales = tuple(scales)
    return Compose([
        SegmentTargets(),
        RandomHorizontalFlip(keys={"mask": "hw"}),
        RandomSelect(
            RandomResize(scales, max_size=max_size),
            Compose([RandomResize(tuple(crop_resize), crop_resize_max), RandomSizeCrop(*crop_size),
                     RandomResize(scales, max_size=max_size)]),
        ),
        Normalize(),
        ToTensor(),
    ])


def test_pipeline(size: int = 800, max_size: int = 1333) -> Compose:
    """Evaluation: the image to short side ``size``, long side ≤ ``max_size``; ground truth at its original size."""
    return Compose([Resize(size, max_size), Normalize(), ToTensor()])
