"""The SegFormer ADE20K pipelines (mmseg semantics), each step a callable ``sample dict -> sample dict``.

A sample holds ``"image"`` (``[H, W, 3]`` RGB, uint8 until ``Normalize``), optionally ``"mask"`` (``[H, W]``
uint8 class indices, moved with the image, always with nearest interpolation) and, for the random steps,
``"rng"``: a ``numpy.random.Generator``. Randomness comes only from that generator, never from global
state, so a sample's augmentation is a function of how its generator was seeded; the datasets seed it
per sample (``dataset[(index, seed)]``), which is what makes resumed training repeat the same
augmentations whatever the number of workers. A random step called without ``sample["rng"]`` is a
``ValueError``. Steps replace the dict's arrays (never write into them) and return the same dict.

Sizes follow mmcv: a keep-ratio rescale to ``scale = (long, short)`` uses the factor
``min(long / long_edge, short / short_edge)`` and the new size ``int(x * factor + 0.5)``; images are
resized with cv2 bilinear, masks with cv2 nearest.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch

from tasks.common.images import IMAGENET_MEAN_255, IMAGENET_STD_255
from tasks.common.transforms import Compose, RandomHorizontalFlip, sample_rng  # noqa: F401  (part of this API)


def _check_pair(value: Sequence, name: str, *, integer: bool = False, positive: bool = True) -> None:
    kind = numbers.Integral if integer else numbers.Real
    if (
        isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2
        or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"{name} must be a pair of {'ints' if integer else 'numbers'}, got {value!r}")
    if positive and min(value) <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")


def rescale_size(height: int, width: int, scale: Sequence[int]) -> tuple[int, int]:
    """``(new_h, new_w)``: the keep-ratio size fitting ``scale = (long, short)`` (either order), mmcv-style."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def aligned_resize_shape(height: int, width: int, scale=(2048, 512), size_divisor: int = 32) -> tuple[int, int]:
    """SegFormer's ``AlignedResize`` size: ``rescale_size``, then each side rounded UP to a multiple of
    ``size_divisor``."""
    _check_pair((height, width), "image size (h, w)", integer=True)
    _check_pair(scale, "scale", integer=True)
    if isinstance(size_divisor, bool) or not isinstance(size_divisor, int) or size_divisor < 1:
        raise ValueError(f"size_divisor must be a positive int, got {size_divisor!r}")
    return tuple(math.ceil(s / size_divisor) * size_divisor for s in rescale_size(height, width, scale))


def aligned_resize(image: np.ndarray, scale=(2048, 512), size_divisor: int = 32) -> np.ndarray:
    """Resize an ``[H, W, C]`` image as ``AlignedResize`` does: two cv2 bilinear resizes, as in the original
    (the keep-ratio rescale, then the stretch to multiples of ``size_divisor``)."""
    height, width = image.shape[:2]
    size = rescale_size(height, width, scale)
    image = cv2.resize(image, size[::-1], interpolation=cv2.INTER_LINEAR)
    aligned = aligned_resize_shape(height, width, scale, size_divisor)
    return cv2.resize(image, aligned[::-1], interpolation=cv2.INTER_LINEAR) if aligned != size else image


def _resize(sample: dict, size: tuple[int, int], *, mask: bool = True) -> dict:
    height, width = size
    sample["image"] = cv2.resize(sample["image"], (width, height), interpolation=cv2.INTER_LINEAR)
    if mask and sample.get("mask") is not None:
        sample["mask"] = cv2.resize(sample["mask"], (width, height), interpolation=cv2.INTER_NEAREST)
    return sample


@dataclass(frozen=True)
class RandomResize:
    """Keep-ratio resize to ``scale`` times a ratio drawn uniformly from ``ratio_range``. As in mmseg the
    ratio scales the target first, ``(int(long * r), int(short * r))``, then the image is fitted to it."""

    scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)

    def __post_init__(self):
        _check_pair(self.scale, "RandomResize.scale", integer=True)
        _check_pair(self.ratio_range, "RandomResize.ratio_range")
        if self.ratio_range[0] > self.ratio_range[1]:
            raise ValueError(f"RandomResize.ratio_range must be (low, high) with low <= high, got {self.ratio_range}")

    def __call__(self, sample: dict) -> dict:
        low, high = self.ratio_range
        ratio = low + sample_rng(sample, "RandomResize").random() * (high - low)
        target = (int(self.scale[0] * ratio), int(self.scale[1] * ratio))
        return _resize(sample, rescale_size(*sample["image"].shape[:2], target))


@dataclass(frozen=True)
class RandomCrop:
    """A ``crop_size = (h, w)`` window (smaller images are kept whole; ``Pad`` fills them later). With
    ``cat_max_ratio < 1`` a window is redrawn, up to 10 times, while one class covers ``cat_max_ratio`` or
    more of its non-ignored pixels or it holds fewer than two classes; the 11th window is kept unchecked."""

    crop_size: tuple[int, int] = (512, 512)
    cat_max_ratio: float = 0.75
    ignore_index: int = 255

    def __post_init__(self):
        _check_pair(self.crop_size, "RandomCrop.crop_size", integer=True)
        if not 0 < self.cat_max_ratio <= 1:
            raise ValueError(f"RandomCrop.cat_max_ratio must be in (0, 1], got {self.cat_max_ratio}")

    def _window(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int]:
        top = int(rng.integers(0, max(height - self.crop_size[0], 0) + 1))
        left = int(rng.integers(0, max(width - self.crop_size[1], 0) + 1))
        return top, left

    def _balanced(self, mask: np.ndarray) -> bool:
        counts = np.bincount(mask.ravel(), minlength=256)
        if 0 <= self.ignore_index < len(counts):
            counts[self.ignore_index] = 0
        counts = counts[counts > 0]
        return len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio

    def __call__(self, sample: dict) -> dict:
        rng = sample_rng(sample, "RandomCrop")
        height, width = sample["image"].shape[:2]
        crop_h, crop_w = self.crop_size
        top, left = self._window(height, width, rng)
        mask = sample.get("mask")
        if self.cat_max_ratio < 1 and mask is not None:
            for _ in range(10):
                if self._balanced(mask[top : top + crop_h, left : left + crop_w]):
                    break
                top, left = self._window(height, width, rng)
        sample["image"] = sample["image"][top : top + crop_h, left : left + crop_w]
        if mask is not None:
            sample["mask"] = mask[top : top + crop_h, left : left + crop_w]
        return sample


def _affine_uint8(channel: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """``alpha * x + beta`` clipped to [0, 255] and truncated back to uint8, as mmseg does after each step."""
    return np.clip(channel.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class PhotoMetricDistortion:
    """mmseg's colour jitter on a uint8 RGB image; each step applied with probability 1/2, in the order
    brightness, [contrast], saturation, hue, [contrast] (contrast goes first or last, at random, 1/2 each):

    - brightness: add ``U(-brightness_delta, brightness_delta)``;
    - contrast: multiply by ``U(*contrast_range)``;
    - saturation: multiply HSV saturation by ``U(*saturation_range)``;
    - hue: add a uniform integer in ``[-hue_delta, hue_delta]`` to the OpenCV hue (0..179, wrapping).

    Each step clips to [0, 255] and returns to uint8, so it must run before ``Normalize``.
    """

    brightness_delta: float = 32
    contrast_range: tuple[float, float] = (0.5, 1.5)
    saturation_range: tuple[float, float] = (0.5, 1.5)
    hue_delta: int = 18

    def __post_init__(self):
        _check_pair(self.contrast_range, "PhotoMetricDistortion.contrast_range", positive=False)
        _check_pair(self.saturation_range, "PhotoMetricDistortion.saturation_range", positive=False)
        for name in ("contrast_range", "saturation_range"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"PhotoMetricDistortion.{name} must be (low, high) with 0 <= low <= high, got {(low, high)}")
        if self.brightness_delta < 0 or not 0 <= self.hue_delta <= 180:
            raise ValueError(
                f"PhotoMetricDistortion: brightness_delta must be >= 0 and hue_delta in 0..180, got "
                f"{self.brightness_delta} and {self.hue_delta}"
            )

    def _hsv(self, image: np.ndarray, rng: np.random.Generator, channel: int) -> np.ndarray:
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        if channel == 1:
            hsv[..., 1] = _affine_uint8(hsv[..., 1], alpha=rng.uniform(*self.saturation_range))
        else:
            shift = int(rng.integers(-self.hue_delta, self.hue_delta + 1))
            hsv[..., 0] = (hsv[..., 0].astype(np.int32) + shift) % 180
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)

    def __call__(self, sample: dict) -> dict:
        rng = sample_rng(sample, "PhotoMetricDistortion")
        image = sample["image"]
        if image.dtype != np.uint8:
            raise TypeError(f"PhotoMetricDistortion needs a uint8 image (put it before Normalize), got {image.dtype}")
        if rng.integers(2):
            image = _affine_uint8(image, beta=rng.uniform(-self.brightness_delta, self.brightness_delta))
        contrast_last = bool(rng.integers(2))
        if not contrast_last and rng.integers(2):
            image = _affine_uint8(image, alpha=rng.uniform(*self.contrast_range))
        if rng.integers(2):
            image = self._hsv(image, rng, channel=1)
        if rng.integers(2):
            image = self._hsv(image, rng, channel=0)
        if contrast_last and rng.integers(2):
            image = _affine_uint8(image, alpha=rng.uniform(*self.contrast_range))
        sample["image"] = image
        return sample


@dataclass(frozen=True)
class Normalize:
    """``(image - mean) / std`` per RGB channel on 0..255 values (so mean and std in 0..255 units too), to float32."""

    mean: tuple[float, float, float] = IMAGENET_MEAN_255
    std: tuple[float, float, float] = IMAGENET_STD_255

    def __post_init__(self):
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"Normalize: mean and std need 3 values (RGB), std > 0; got {self.mean}, {self.std}")

    def __call__(self, sample: dict) -> dict:
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        sample["image"] = (sample["image"].astype(np.float32) - mean) / std
        return sample


@dataclass(frozen=True)
class Pad:
    """Pad bottom and right up to ``size = (h, w)`` (larger images are left as they are): the image with
    ``pad_val``, the mask with ``seg_pad_val`` so padding is ignored by the loss."""

    size: tuple[int, int] = (512, 512)
    pad_val: float = 0
    seg_pad_val: int = 255

    def __post_init__(self):
        _check_pair(self.size, "Pad.size", integer=True)

    def __call__(self, sample: dict) -> dict:
        height, width = sample["image"].shape[:2]
        bottom, right = max(self.size[0] - height, 0), max(self.size[1] - width, 0)
        if bottom or right:
            sample["image"] = np.pad(sample["image"], ((0, bottom), (0, right), (0, 0)), constant_values=self.pad_val)
            if sample.get("mask") is not None:
                sample["mask"] = np.pad(sample["mask"], ((0, bottom), (0, right)), constant_values=self.seg_pad_val)
        return sample


@dataclass(frozen=True)
class ToTensor:
    """``image`` -> ``Tensor[3, H, W]`` float32 (values unchanged: no /255), ``mask`` -> ``Tensor[H, W]``
    int64; other entries pass through."""

    def __call__(self, sample: dict) -> dict:
        image = np.ascontiguousarray(sample["image"].transpose(2, 0, 1))
        sample["image"] = torch.from_numpy(image).to(torch.float32)
        if sample.get("mask") is not None:
            sample["mask"] = torch.from_numpy(np.ascontiguousarray(sample["mask"])).to(torch.int64)
        return sample


@dataclass(frozen=True)
class TestResize:
    """Evaluation resize ("AlignedResize"): keep-ratio to ``scale``, then a second bilinear resize up to
    multiples of ``size_divisor``. The mask keeps its original size, because the metric is computed there;
    ``sample["ori_size"] = (H, W)`` records the size the logits must be resized back to."""

    scale: tuple[int, int] = (2048, 512)
    size_divisor: int = 32

    def __post_init__(self):
        _check_pair(self.scale, "TestResize.scale", integer=True)
        if not isinstance(self.size_divisor, int) or self.size_divisor < 1:
            raise ValueError(f"TestResize.size_divisor must be a positive int, got {self.size_divisor!r}")

    def __call__(self, sample: dict) -> dict:
        sample["ori_size"] = sample["image"].shape[:2]
        sample["image"] = aligned_resize(sample["image"], self.scale, self.size_divisor)
        return sample


def train_pipeline(
    crop: int = 512,
    scale: tuple[int, int] = (2048, 512),
    ratio_range: tuple[float, float] = (0.5, 2.0),
    cat_max_ratio: float = 0.75,
) -> Compose:
    """SegFormer's ADE20K training augmentation (recipes A2), ending in tensors."""
    return Compose([
        RandomResize(scale, ratio_range=ratio_range),
        RandomCrop((crop, crop), cat_max_ratio=cat_max_ratio, ignore_index=255),
        RandomHorizontalFlip(0.5, keys={"mask": "hw"}),
        PhotoMetricDistortion(),
        Normalize(),
        Pad((crop, crop), pad_val=0, seg_pad_val=255),
        ToTensor(),
    ])


def test_pipeline(scale: tuple[int, int] = (2048, 512)) -> Compose:
    """SegFormer's ADE20K single-scale evaluation: aligned keep-ratio resize, mask at original size."""
    return Compose([TestResize(scale, size_divisor=32), Normalize(), ToTensor()])

