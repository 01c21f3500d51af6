"""Deformable-DETR's COCO pipelines (``datasets/transforms.py`` semantics), each step a callable ``sample -> sample``.

A sample holds ``"image"`` (``[H, W, 3]`` RGB, uint8 until ``Normalize``), ``"boxes"`` (float32 ``[N, 4]`` xyxy
pixels until ``Normalize``, then normalised cxcywh), ``"labels"`` (int64 ``[N]``) and, for the random steps,
``"rng"``: a ``numpy.random.Generator``, the only source of randomness (the datasets seed it per sample with
``dataset[(index, seed)]``); a random step without it is a ``ValueError``. Boxes follow every geometric step;
a crop drops the boxes it leaves with no area, with their labels. A ``"mask"`` target map (``[H, W]``, e.g. the
panoptic task's target index per pixel) follows every geometric step too, by nearest neighbour. Steps replace
arrays (never write into them) and return the same dict.

Resizing is PIL bilinear (what the original's torchvision ``F.resize`` on PIL images and Hugging Face's image
processor use). The keep-ratio size for a short side ``s`` and cap ``max_size`` is the original's
``get_size``: ``s`` is lowered to ``round(max_size · short / long)`` when the long side would exceed the cap,
the short side becomes ``s`` and the long side ``int(s · long / short)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from tasks.common.images import IMAGENET_MEAN, IMAGENET_STD
from tasks.common.transforms import Compose, RandomHorizontalFlip, sample_rng  # noqa: F401  (part of this API)

DETR_SCALES = tuple(range(480, 801, 32))  # 480, 512, ..., 800


def check_sizes(sizes: Sequence[int], name: str) -> None:
    """``sizes`` must be a non-empty sequence of positive ints; else a ValueError naming ``name`` (the caller's)."""
    if not sizes or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes):
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {sizes!r}")


def get_size(height: int, width: int, size: int, max_size: Optional[int] = None) -> tuple[int, int]:
    """``(new_h, new_w)`` with the short side ``size`` (lowered so the long side stays ≤ ``max_size``)."""
    short, long = min(height, width), max(height, width)
    if max_size is not None and long / short * size > max_size:
        size = int(round(max_size * short / long))
    if short == size:
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def resize(sample: dict, size: int, max_size: Optional[int]) -> dict:
    """Keep-ratio resize of the image (PIL bilinear) to short side ``size`` (see ``get_size``), with its
    ``"boxes"`` (scaled) and a ``"mask"`` target map (nearest: every pixel keeps one target) where present."""
    height, width = sample["image"].shape[:2]
    new_h, new_w = get_size(height, width, size, max_size)
    if (new_h, new_w) != (height, width):
        sample["image"] = np.asarray(Image.fromarray(sample["image"]).resize((new_w, new_h), Image.BILINEAR))
        if "boxes" in sample:
            scale = np.array([new_w / width, new_h / height] * 2, dtype=np.float32)
            sample["boxes"] = sample["boxes"] * scale
        if sample.get("mask") is not None:
            mask = Image.fromarray(sample["mask"].astype(np.int32)).resize((new_w, new_h), Image.NEAREST)
            sample["mask"] = np.asarray(mask, np.int32)
    return sample


@dataclass(frozen=True)
class RandomResize:
    """Keep-ratio resize to a short side drawn uniformly from ``sizes``, long side capped at ``max_size``."""

    sizes: tuple[int, ...]
    max_size: Optional[int] = None

    def __post_init__(self):
        check_sizes(self.sizes, "RandomResize.sizes")
        if self.max_size is not None and not (isinstance(self.max_size, int) and self.max_size > 0):
            raise ValueError(f"RandomResize.max_size must be a positive int or None, got {self.max_size!r}")

    def __call__(self, sample: dict) -> dict:
        size = self.sizes[int(sample_rng(sample, "RandomResize").integers(len(self.sizes)))]
        return resize(sample, size, self.max_size)


@dataclass(frozen=True)
class Resize:
    """Evaluation: keep-ratio resize to short side ``size``, long side capped at ``max_size`` (no randomness)."""

    size: int = 800
    max_size: Optional[int] = 1333

    def __post_init__(self):
        check_sizes((self.size,), "Resize.size")

    def __call__(self, sample: dict) -> dict:
        return resize(sample, self.size, self.max_size)


@dataclass(frozen=True)
class RandomSizeCrop:
    """Crop a window of width ``U{min_size .. min(W, max_size)}`` and height ``U{min_size .. min(H, max_size)}``
    (integers, bounds included) at a uniform position, of the image and its targets (see ``crop``). An image side
    shorter than ``min_size`` is kept whole (the original would fail)."""

    min_size: int = 384
    max_size: int = 600

    def __post_init__(self):
        check_sizes((self.min_size, self.max_size), "RandomSizeCrop (min_size, max_size)")
        if self.min_size > self.max_size:
            raise ValueError(f"RandomSizeCrop: min_size {self.min_size} > max_size {self.max_size}")

    def __call__(self, sample: dict) -> dict:
        rng = sample_rng(sample, "RandomSizeCrop")
        height, width = sample["image"].shape[:2]
        crop_w = int(rng.integers(min(self.min_size, width), min(width, self.max_size) + 1))
        crop_h = int(rng.integers(min(self.min_size, height), min(height, self.max_size) + 1))
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
        return crop(sample, top, left, crop_h, crop_w)


def crop(sample: dict, top: int, left: int, height: int, width: int) -> dict:
    """The window ``[top, top + height) × [left, left + width)`` of the image and a ``"mask"`` target map where
    present; ``"boxes"`` (where present) shifted and clipped, those left with no area dropped with their labels."""
    window = (slice(top, top + height), slice(left, left + width))
    sample["image"] = sample["image"][window]
    if sample.get("mask") is not None:
        sample["mask"] = sample["mask"][window]
    if "boxes" not in sample:
        return sample
    boxes = sample["boxes"] - np.array([left, top, left, top], dtype=np.float32)
    boxes = np.minimum(boxes.reshape(-1, 2, 2), np.array([width, height], dtype=np.float32)).clip(min=0)
    keep = (boxes[:, 1, :] > boxes[:, 0, :]).all(axis=1)
    sample["boxes"] = boxes.reshape(-1, 4)[keep]
    sample["labels"] = sample["labels"][keep]
    return sample


class RandomSelect:
    """``first`` with probability ``prob``, otherwise ``second`` (one draw per call)."""

    def __init__(self, first: Callable[[dict], dict], second: Callable[[dict], dict], prob: float = 0.5):
        if not 0 <= prob <= 1:
            raise ValueError(f"RandomSelect.prob must be in [0, 1], got {prob}")
        self.first, self.second, self.prob = first, second, prob

    def __call__(self, sample: dict) -> dict:
        return self.first(sample) if sample_rng(sample, "RandomSelect").random() < self.prob else self.second(sample)

    def __repr__(self) -> str:
        return f"RandomSelect({self.first!r}, {self.second!r}, prob={self.prob})"


@dataclass(frozen=True)
class Normalize:
    """The image to float32 ``(x / 255 - mean) / std`` (ImageNet statistics on 0..1), and the boxes (where
    present) to normalised ``(cx, cy, w, h)`` fractions of the image size, as the original's ``Normalize`` does."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __call__(self, sample: dict) -> dict:
        height, width = sample["image"].shape[:2]
        image = sample["image"].astype(np.float32) / 255.0
        sample["image"] = (image - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if "boxes" not in sample:
            return sample
        x0, y0, x1, y1 = np.asarray(sample["boxes"], np.float32).reshape(-1, 4).T
        cxcywh = np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=1)
        sample["boxes"] = cxcywh / np.array([width, height, width, height], dtype=np.float32)
        return sample


@dataclass(frozen=True)
class ToTensor:
    """``image`` -> ``Tensor[3, H, W]`` float32, ``boxes`` -> float32 ``[N, 4]``, ``labels`` -> int64 ``[N]``, and
    ``"size"`` = ``(H, W)`` of the network input (before any batch padding)."""

    def __call__(self, sample: dict) -> dict:
        image = np.ascontiguousarray(sample["image"].transpose(2, 0, 1))
        sample["image"] = torch.from_numpy(image).to(torch.float32)
        sample["boxes"] = torch.as_tensor(np.asarray(sample["boxes"], np.float32).reshape(-1, 4))
        sample["labels"] = torch.as_tensor(np.asarray(sample["labels"]), dtype=torch.int64)
        sample["size"] = tuple(image.shape[1:])
        return sample


def train_pipeline(scales: Sequence[int] = DETR_SCALES, max_size: int = 1333,
                   crop_resize: Sequence[int] = (400, 500, 600), crop_size: tuple[int, int] = (384, 600)) -> Compose:
    """Deformable-DETR's COCO training augmentation: flip, then (1/2 each) a multi-scale resize, or resize,
    crop and multi-scale resize; ImageNet normalisation, normalised cxcywh boxes, tensors. A toy config passes
    small ``scales``, ``crop_resize`` and ``crop_size``."""
    scales = tuple(scales)
    return Compose([
        RandomHorizontalFlip(keys={"boxes": "xyxy"}),
        RandomSelect(
            RandomResize(scales, max_size=max_size),
            Compose([RandomResize(tuple(crop_resize)), RandomSizeCrop(*crop_size), RandomResize(scales, max_size=max_size)]),
        ),
        Normalize(),
        ToTensor(),
    ])


def test_pipeline(size: int = 800, max_size: int = 1333, *, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Compose:
    """Deformable-DETR's evaluation: short side ``size``, long side ≤ ``max_size``, then as in training."""
    return Compose([Resize(size, max_size), Normalize(tuple(mean), tuple(std)), ToTensor()])
