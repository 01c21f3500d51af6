"""The classification pipelines: the DeiT training augmentation (which PVTv2 was trained with) built from
``torchvision.transforms.v2``, and the DeiT evaluation transform.

Training (per sample, ``train_transform``): RandomResizedCrop (scale 0.08-1, ratio 3/4-4/3, bicubic), horizontal
flip, RandAugment, normalisation, RandomErasing; then per batch (``MixCollate``): MixUp or CutMix (chosen
50/50) and label smoothing, giving soft targets ``[B, K]``.

Where this differs from timm's ``rand-m9-mstd0.5-inc1`` (DeiT's ``--aa``) and timm's ``Mixup``:

- RandAugment: built with ``num_magnitude_bins=11`` so that ``magnitude=9`` means 9 on timm's 0-10 scale; the
  ranges then agree (shear 0.3·9/10, translate 0.45 of the side, rotate 27°, brightness/colour/contrast/
  sharpness 1 ± 0.81, solarize threshold 26). Differences: timm draws each op's magnitude from N(9, 0.5)
  ("mstd0.5"), torchvision uses exactly 9; timm applies each of its 2 ops with probability 0.5, torchvision
  always applies them; timm's "inc1" set has Invert and SolarizeAdd and no Identity, torchvision's has
  Identity and neither of the two; Posterize keeps 1 bit in timm's increasing variant at m9, 4 bits in
  torchvision's; torchvision's tensor kernels rotate/shear/translate bilinearly (timm: bicubic, on PIL). The
  strength is comparable, not equal; runs with either are not bit-comparable. Both fill with the mean pixel.
- RandomErasing: ``value="random"`` fills with per-pixel normal noise, like timm's ``mode="pixel"``; same area
  (2-33%) and log-ratio (0.3-3.3) ranges, one box.
- MixUp/CutMix: torchvision pairs each image with its neighbour in the batch (``roll(1)``), timm with its
  mirror (``flip(0)``); both draw one lambda per batch from Beta(alpha, alpha) and correct CutMix's lambda by
  the clipped box area. Label smoothing is applied to the mixed one-hot targets, which equals timm's mixing
  of smoothed targets (the operation is linear).

Randomness: every random step draws from a torch generator seeded from ``sample["rng"]`` (and, for the
batch step, from the batch's samples), so augmentation depends only on the sampler's keys — a resumed run
sees the same images whatever the number of workers.

Evaluation (``eval_transform``): ``resize="short_side_crop"`` is DeiT's: resize the short side to
``int(size / crop_pct)`` (224 / 0.875 = 256) with PIL bicubic, centre-crop ``size``; ``"fixed"`` resizes
straight to ``size x size`` (Hugging Face's ``PvtImageProcessor``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from tasks.common.images import IMAGENET_MEAN, IMAGENET_STD  # 0-1 units: (rgb / 255 - mean) / std
from tasks.common.transforms import sample_rng

_INTERPOLATION = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}
_PIL_INTERPOLATION = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}
RESIZE_RULES = ("short_side_crop", "fixed")


def _interpolation(name: str, table: dict):
    if name not in table:
        raise ValueError(f"interpolation must be one of {', '.join(table)}, got {name!r}")
    return table[name]


class TrainTransform:
    """``{"image": uint8 [H, W, 3], "label", "rng"} -> {"image": float32 [3, size, size], "label", "mix_seed"}``.

    ``rand_augment`` = ``(num_ops, magnitude)`` or None; ``erasing`` is RandomErasing's probability (0 = off).
    """

    def __init__(self, size: int = 224, *, scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3),
                 interpolation: str = "bicubic", hflip: float = 0.5, rand_augment: Sequence[int] | None = (2, 9),
                 erasing: float = 0.25, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        mode = _interpolation(interpolation, _INTERPOLATION)
        if not 0 <= hflip <= 1 or not 0 <= erasing <= 1:
            raise ValueError(f"hflip and erasing are probabilities in [0, 1], got {hflip} and {erasing}")
        steps = [v2.RandomResizedCrop(size, scale=tuple(scale), ratio=tuple(ratio), interpolation=mode, antialias=True)]
        if hflip:
            steps.append(v2.RandomHorizontalFlip(hflip))
        if rand_augment is not None:
            num_ops, magnitude = rand_augment
            steps.append(v2.RandAugment(num_ops=num_ops, magnitude=magnitude, num_magnitude_bins=11,
                                        fill=[round(255 * m) for m in mean]))  # timm fills with the mean pixel
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
        if erasing:
            steps.append(v2.RandomErasing(p=erasing, value="random"))
        self.pipeline = v2.Compose(steps)

    def __call__(self, sample: dict) -> dict:
        rng = sample_rng(sample, "TrainTransform")
        image = torch.from_numpy(np.ascontiguousarray(sample["image"])).permute(2, 0, 1)
        seed, mix_seed = (int(s) for s in rng.integers(0, 2**62, size=2))
        with torch.random.fork_rng(devices=[]):  # the global generator is left as it was
            torch.manual_seed(seed)
            sample["image"] = self.pipeline(image)
        sample["mix_seed"] = mix_seed
        return sample

    def __repr__(self) -> str:
        return f"TrainTransform({self.pipeline})"


class EvalTransform:
    """``{"image": uint8 [H, W, 3], ...} -> {"image": float32 [3, size, size], ...}`` (see the module docstring)."""

    def __init__(self, size: int = 224, *, resize: str = "short_side_crop", crop_pct: float = 0.875,
                 interpolation: str = "bicubic", mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        if resize not in RESIZE_RULES:
            raise ValueError(f"resize must be one of {', '.join(RESIZE_RULES)}, got {resize!r}")
        if not 0 < crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
        self.size, self.resize, self.crop_pct = size, resize, crop_pct
        self.short = int(size / crop_pct)  # short_side_crop: the short side before the centre crop
        self.interpolation = _interpolation(interpolation, _PIL_INTERPOLATION)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    @classmethod
    def from_preprocessing(cls, p) -> "EvalTransform":
        """The transform that a model's ``Preprocessing`` (``short_side_crop`` or ``fixed``) describes."""
        if p.resize == "short_side_crop":
            out = cls(p.size[1], resize=p.resize, interpolation=p.interpolation, mean=p.mean, std=p.std)
            out.short = p.size[0]
            return out
        if p.resize == "fixed" and p.size[0] == p.size[1]:
            return cls(p.size[0], resize=p.resize, interpolation=p.interpolation, mean=p.mean, std=p.std)
        raise ValueError(f"classification evaluation needs a short_side_crop or square fixed resize, got {p.resize} {p.size}")

    def resized(self, image: np.ndarray) -> np.ndarray:
        """``uint8 [size, size, 3]``: the resize and crop alone (PIL, as DeiT's torchvision-on-PIL code)."""
        pil = Image.fromarray(image)
        if self.resize == "fixed":
            return np.array(pil.resize((self.size, self.size), self.interpolation))
        short = self.short
        w, h = pil.size
        # torchvision's Resize(int) rule: the short side becomes `short`, the long side int(short * long / short_side)
        new = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        pil = pil.resize(new, self.interpolation)
        left, top = int(round((new[0] - self.size) / 2.0)), int(round((new[1] - self.size) / 2.0))
        return np.array(pil.crop((left, top, left + self.size, top + self.size)))

    def __call__(self, sample: dict) -> dict:
        image = torch.from_numpy(np.ascontiguousarray(self.resized(sample["image"]))).permute(2, 0, 1)
        sample["image"] = (image.float() / 255 - self.mean) / self.std
        return sample


class MixCollate:
    """Stack training samples and mix the batch: ``{"image": [B, 3, H, W], "target": float32 [B, K]}``.

    With probability ``prob`` a batch is mixed, by CutMix with probability ``switch_prob`` else MixUp (alpha 0
    turns one off); the one-hot targets are then smoothed: ``t * (1 - smoothing) + smoothing / K``.
    """

    def __init__(self, num_classes: int, *, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, prob: float = 1.0,
                 switch_prob: float = 0.5, label_smoothing: float = 0.1):
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f"mixup_alpha and cutmix_alpha must be >= 0, got {mixup_alpha} and {cutmix_alpha}")
        self.num_classes, self.prob, self.smoothing = num_classes, prob, label_smoothing
        self.mixup = v2.MixUp(alpha=mixup_alpha, num_classes=num_classes) if mixup_alpha > 0 else None
        self.cutmix = v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes) if cutmix_alpha > 0 else None
        self.switch_prob = switch_prob if self.mixup and self.cutmix else float(self.cutmix is not None)

    def __call__(self, samples: list[dict]) -> dict:
        images = torch.stack([s["image"] for s in samples])
        labels = torch.tensor([s["label"] for s in samples], dtype=torch.int64)
        rng = np.random.default_rng([s.get("mix_seed", 0) for s in samples])
        target = torch.nn.functional.one_hot(labels, self.num_classes).float()
        if (self.mixup or self.cutmix) and rng.random() < self.prob:
            mixer = self.cutmix if rng.random() < self.switch_prob else self.mixup
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(rng.integers(0, 2**62)))
                images, target = mixer(images, labels)
        target = target * (1 - self.smoothing) + self.smoothing / self.num_classes
        return {"image": images, "target": target, "label": labels}


def eval_collate(samples: list[dict]) -> dict:
    return {"image": torch.stack([s["image"] for s in samples]),
            "label": torch.tensor([s["label"] for s in samples], dtype=torch.int64),
            "path": [s.get("path") for s in samples]}
