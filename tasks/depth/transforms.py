"""The GLPN NYU training pipeline (recipes A3), each step a callable ``sample dict -> sample dict``.

A sample holds ``"image"`` (``[H, W, 3]`` uint8 RGB until ``ToTensor``), ``"depth"`` (``[H, W]`` float32
metres, 0 = invalid; moved with the image, never interpolated) and, for the random steps, ``"rng"``: a
``numpy.random.Generator``. As in ``tasks.segmentation.transforms``, randomness comes only from that
generator (the datasets seed it per sample with ``dataset[(index, seed)]``), a random step called without it
is a ``ValueError``, and steps replace the dict's arrays rather than writing into them.

The photometric steps follow albumentations' defaults (GLPDepth uses them with their defaults, p = 0.5 each),
re-implemented here on uint8 lookup tables:

- ``RandomBrightnessContrast``: ``x * (1 + c) + 255 * b`` with ``b, c ~ U(-0.2, 0.2)``;
- ``RandomGamma``: ``255 * (x / 255) ** g`` with ``g ~ U(0.8, 1.2)``;
- ``HueSaturationValue``: in OpenCV's uint8 HSV (hue 0..179, wrapping), add ``U(-20, 20)`` to hue,
  ``U(-30, 30)`` to saturation and ``U(-20, 20)`` to value (the last two clipped to 0..255).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch

from tasks.common.images import check_image
from tasks.common.transforms import Compose, RandomHorizontalFlip, sample_rng  # noqa: F401  (part of this API)


def _uint8_image(sample: dict, who: str) -> np.ndarray:
    return check_image(sample["image"], f"{who}: the image (put it before ToTensor)")


def _check_prob(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")


def _check_limit(value: float, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")


def _lut(image: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Apply a 256-entry float table to a uint8 array, clipped to 0..255 and truncated (as albumentations)."""
    return cv2.LUT(image, np.clip(table, 0, 255).astype(np.uint8))


@dataclass(frozen=True)
class RandomCrop:
    """A random ``height × width`` window of image and depth (the same window). An image smaller than the
    crop is a ``ValueError``: padding would invent image borders the test images never have."""

    height: int = 448
    width: int = 576

    def __post_init__(self):
        for name in ("height", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"RandomCrop.{name} must be a positive int, got {value!r}")

    def __call__(self, sample: dict) -> dict:
        rng = sample_rng(sample, "RandomCrop")
        height, width = sample["image"].shape[:2]
        if height < self.height or width < self.width:
            raise ValueError(
                f"RandomCrop({self.height}, {self.width}): the image {sample.get('path', '')} is only "
                f"{height}x{width}; use a smaller crop"
            )
        top = int(rng.integers(0, height - self.height + 1))
        left = int(rng.integers(0, width - self.width + 1))
        window = (slice(top, top + self.height), slice(left, left + self.width))
        sample["image"] = sample["image"][window]
        sample["depth"] = sample["depth"][window]
        return sample


@dataclass(frozen=True)
class RandomBrightnessContrast:
    """With probability ``p``: ``x * (1 + U(-contrast_limit, contrast_limit)) + 255 * U(-brightness_limit,
    brightness_limit)`` (albumentations' default ``brightness_by_max``)."""

    brightness_limit: float = 0.2
    contrast_limit: float = 0.2
    p: float = 0.5

    def __post_init__(self):
        _check_limit(self.brightness_limit, "RandomBrightnessContrast.brightness_limit")
        _check_limit(self.contrast_limit, "RandomBrightnessContrast.contrast_limit")
        _check_prob(self.p, "RandomBrightnessContrast.p")

    def __call__(self, sample: dict) -> dict:
        rng = sample_rng(sample, "RandomBrightnessContrast")
        image = _uint8_image(sample, "RandomBrightnessContrast")
        if rng.random() < self.p:
            alpha = 1.0 + rng.uniform(-self.contrast_limit, self.contrast_limit)
            beta = rng.uniform(-self.brightness_limit, self.brightness_limit)
            sample["image"] = _lut(image, np.arange(256, dtype=np.float32) * alpha + 255.0 * beta)
        return sample


@dataclass(frozen=True)
class RandomGamma:
    """With probability ``p``: ``255 * (x / 255) ** g``, ``g = U(*gamma_limit) / 100``."""

    gamma_limit: tuple[float, float] = (80, 120)
    p: float = 0.5

    def __post_init__(self):
        limit = self.gamma_limit
        if (isinstance(limit, (str, bytes)) or not isinstance(limit, Sequence) or len(limit) != 2
                or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in limit)
                or not 0 < limit[0] <= limit[1]):
            raise ValueError(f"RandomGamma.gamma_limit must be (low, high) with 0 < low <= high, got {self.gamma_limit}")
        _check_prob(self.p, "RandomGamma.p")

    def __call__(self, sample: dict) -> dict:
        rng = sample_rng(sample, "RandomGamma")
        image = _uint8_image(sample, "RandomGamma")
        if rng.random() < self.p:
            gamma = rng.uniform(*self.gamma_limit) / 100.0
            sample["image"] = _lut(image, 255.0 * (np.arange(256, dtype=np.float32) / 255.0) ** gamma)
        return sample


@dataclass(frozen=True)
class HueSaturationValue:
    """With probability ``p``, in OpenCV's uint8 HSV: hue += ``U(-hue_shift_limit, hue_shift_limit)`` (mod 180),
    saturation += ``U(±sat_shift_limit)`` and value += ``U(±val_shift_limit)`` (clipped to 0..255)."""

    hue_shift_limit: float = 20
    sat_shift_limit: float = 30
    val_shift_limit: float = 20
    p: float = 0.5

    def __post_init__(self):
        for name in ("hue_shift_limit", "sat_shift_limit", "val_shift_limit"):
            _check_limit(getattr(self, name), f"HueSaturationValue.{name}")
        _check_prob(self.p, "HueSaturationValue.p")

    def __call__(self, sample: dict) -> dict:
        rng = sample_rng(sample, "HueSaturationValue")
        image = _uint8_image(sample, "HueSaturationValue")
        if rng.random() < self.p:
            shifts = [rng.uniform(-limit, limit)
                      for limit in (self.hue_shift_limit, self.sat_shift_limit, self.val_shift_limit)]
            levels = np.arange(256, dtype=np.float32)
            hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_RGB2HSV))
            hue = cv2.LUT(hue, np.mod(levels + shifts[0], 180).astype(np.uint8))
            sat, val = _lut(sat, levels + shifts[1]), _lut(val, levels + shifts[2])
            sample["image"] = cv2.cvtColor(cv2.merge([hue, sat, val]), cv2.COLOR_HSV2RGB)
        return sample


@dataclass(frozen=True)
class VerticalCutDepth:
    """GLPN's vertical CutDepth: paste a full-height strip of the ground-truth depth into the image.

    The strip starts at column ``int(a * W)`` and is ``int(max((W - a * W) * b * p, 1))`` wide, ``a, b ~
    U(0, 1)``; its pixels become ``255 * clip(depth / max_depth, 0, 1)`` (rounded) in all three channels,
    i.e. the depth normalised to the image's range. GLPDepth pastes the raw depth (millimetres on NYU) into
    the uint8 image, which wraps into noise; that is a bug in its code, not the method of the CutDepth paper,
    so we paste the normalised depth (invalid depth, 0, pastes as black).

    GLPDepth applies it to every 4th sample a DataLoader worker produces (a per-worker counter, so which
    samples get it depends on the worker count and the order). Here each sample draws ``rng.random() <
    apply_prob`` from its own generator: the same 25 % on average, and a function of the sample's seed
    alone, so resumed or re-sharded runs repeat it.
    """

    p: float = 0.75
    apply_prob: float = 0.25
    max_depth: float = 10.0

    def __post_init__(self):
        _check_prob(self.p, "VerticalCutDepth.p")
        _check_prob(self.apply_prob, "VerticalCutDepth.apply_prob")
        if isinstance(self.max_depth, bool) or not isinstance(self.max_depth, numbers.Real) or not self.max_depth > 0:
            raise ValueError(f"VerticalCutDepth.max_depth must be > 0 (metres), got {self.max_depth!r}")

    def strip(self, width: int, rng: np.random.Generator) -> tuple[int, int]:
        """``(left, strip width)`` for an image ``width`` pixels wide."""
        a, b = rng.random(), rng.random()
        left = int(a * width)
        return left, int(max((width - a * width) * b * self.p, 1))

    def __call__(self, sample: dict) -> dict:
        rng = sample_rng(sample, "VerticalCutDepth")
        image = _uint8_image(sample, "VerticalCutDepth")
        if rng.random() < self.apply_prob:
            left, size = self.strip(image.shape[1], rng)
            columns = slice(left, left + size)
            strip = np.clip(sample["depth"][:, columns] / self.max_depth, 0, 1) * 255
            image = image.copy()
            image[:, columns] = np.round(strip).astype(np.uint8)[..., None]
            sample["image"] = image
        return sample


@dataclass(frozen=True)
class ToTensor:
    """``image`` uint8 -> ``Tensor[3, H, W]`` float32 in [0, 1] (GLPN uses no mean/std normalisation),
    ``depth`` -> ``Tensor[1, H, W]`` float32 metres; other entries pass through."""

    def __call__(self, sample: dict) -> dict:
        image = _uint8_image(sample, "ToTensor")
        sample["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(torch.float32) / 255.0
        if sample.get("depth") is not None:
            depth = np.ascontiguousarray(sample["depth"], dtype=np.float32)
            sample["depth"] = torch.from_numpy(depth)[None]
        return sample


def train_pipeline(crop: tuple[int, int] = (448, 576), max_depth: float = 10.0) -> Compose:
    """GLPN's NYU training augmentation (recipes A3), ending in tensors. CutDepth runs last, on the final
    crop and after the colour jitter, so the pasted strip is exactly the normalised depth."""
    return Compose([
        RandomCrop(*crop),
        RandomHorizontalFlip(0.5, keys={"depth": "hw"}),
        RandomBrightnessContrast(),
        RandomGamma(),
        HueSaturationValue(),
        VerticalCutDepth(p=0.75, max_depth=max_depth),
        ToTensor(),
    ])


def test_pipeline() -> Compose:
    """Evaluation: the full-resolution image as it is (GLPN predicts at 480x640), as tensors."""
    return Compose([ToTensor()])
