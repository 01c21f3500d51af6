"""What a model expects of an image, stored with the model: ``pixel_values = (rgb / 255 - mean) / std`` after
a resize rule. Every task model carries one (``model.preprocessing``), every checkpoint and ``config.json``
we write stores it, and an exported ONNX file keeps it as metadata, so a raw image is all a user needs.

Resize rules (``size`` means):
- ``"none"``: the image as it is (GLPN predicts at full resolution);
- ``"keep_ratio"``: ``(long, short)``, scaled by ``min(long / max(h, w), short / min(h, w))`` (mmseg's keep-ratio
  resize; SegFormer's (2048, 512));
- ``"short_side"``: ``(short, max_long)``, the short side to ``short`` unless the long side would pass
  ``max_long`` (DETR's (800, 1333));
- ``"short_side_crop"``: ``(short, crop)``, the short side to ``short`` then a centre crop ``crop x crop``
  (DeiT's evaluation: 256 then 224);
- ``"fixed"``: ``(h, w)``.
Then each side is rounded up to a multiple of ``size_divisor`` by resizing (SegFormer's ``AlignedResize``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

from tasks.common.images import IMAGENET_MEAN, IMAGENET_STD, check_image  # noqa: F401  (check_image: part of this API)
_RULES = {"none": 0, "keep_ratio": 2, "short_side": 2, "short_side_crop": 2, "fixed": 2}  # rule -> len(size)
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class Preprocessing:
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = "none"
    size: tuple[int, ...] = ()
    size_divisor: int = 1
    interpolation: str = "bilinear"

    def __post_init__(self):
        for name in ("mean", "std"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or len(tuple(value)) != 3:
                raise ValueError(f"Preprocessing.{name} must be 3 numbers (RGB, 0-1 units), got {value!r}")
            object.__setattr__(self, name, tuple(float(v) for v in value))
        if min(self.std) <= 0 or max(self.mean) > 1 or max(self.std) > 1:
            raise ValueError(
                f"Preprocessing: mean and std are in 0-1 units (e.g. {IMAGENET_MEAN} / {IMAGENET_STD}), std > 0; "
                f"got mean={self.mean}, std={self.std}"
            )
        if self.resize not in _RULES:
            raise ValueError(f"Preprocessing.resize must be one of {', '.join(_RULES)}, got {self.resize!r}")
        size = tuple(self.size)
        if len(size) != _RULES[self.resize] or not all(isinstance(s, int) and s > 0 for s in size):
            raise ValueError(
                f"Preprocessing.size for resize={self.resize!r} must be {_RULES[self.resize]} positive ints, got {self.size!r}"
            )
        object.__setattr__(self, "size", size)
        if isinstance(self.size_divisor, bool) or not isinstance(self.size_divisor, int) or self.size_divisor < 1:
            raise ValueError(f"Preprocessing.size_divisor must be a positive int, got {self.size_divisor!r}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"Preprocessing.interpolation must be one of {', '.join(_INTERPOLATIONS)}, got {self.interpolation!r}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: "Mapping | Preprocessing") -> "Preprocessing":
        if isinstance(values, Preprocessing):
            return values
        if not isinstance(values, Mapping):
            raise TypeError(f"preprocessing must be a dict or Preprocessing, got {type(values).__name__}")
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"preprocessing: unknown keys {', '.join(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The network input's (h, w) for an image of ``height x width`` (before a centre crop)."""
        if self.resize == "none":
            h, w = height, width
        elif self.resize == "fixed":
            h, w = self.size
        elif self.resize == "keep_ratio":
            long, short = self.size
            scale = min(long / max(height, width), short / min(height, width))
            h, w = int(height * scale + 0.5), int(width * scale + 0.5)
        else:  # short_side / short_side_crop: torchvision's and DETR's rule (the long side truncated)
            short, limit = self.size
            lo, hi = min(height, width), max(height, width)
            if self.resize == "short_side" and hi / lo * short > limit:
                short = int(round(limit * lo / hi))
            long = int(short * hi / lo)
            h, w = (short, long) if height <= width else (long, short)
        d = self.size_divisor
        return math.ceil(h / d) * d, math.ceil(w / d) * d

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """``image[H, W, 3]`` uint8 RGB -> ``pixel_values[1, 3, h, w]`` float32."""
        check_image(image)
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        size = self.output_size(*image.shape[:2])
        if size != tuple(image.shape[:2]):
            mode = InterpolationMode(self.interpolation)
            x = TF.resize(x, list(size), interpolation=mode, antialias=mode != InterpolationMode.NEAREST)
        if self.resize == "short_side_crop":
            x = TF.center_crop(x, [self.size[1], self.size[1]])
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return ((x.float() / 255.0 - mean) / std)[None]
