"""Test-time inference at the original image size: the ADE20K / Cityscapes protocols of the SegFormer code.

Per augmentation (scale ratio r, optional horizontal flip): keep-ratio rescale of the uint8 image to
``(int(2048·r), int(512·r))``, a second resize up to multiples of 32 (``AlignedResize``), normalisation,
logits for the whole image (ADE20K) or for sliding windows (Cityscapes), bilinear resize back to the
original size, softmax. The softmax is averaged over augmentations and the argmax is the label map.
"""
from __future__ import annotations

import numbers
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tasks.common.images import check_image
from tasks.common.model import predicting

from .transforms import aligned_resize, aligned_resize_shape  # noqa: F401  (part of this module's API)

Model = Callable[[torch.Tensor], torch.Tensor]  # Tensor[B, 3, H, W] -> logits Tensor[B, K, h, w]


def _pair(value, name: str) -> tuple[int, int]:
    if (
        isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ValueError(f"{name} must be a pair of positive ints, got {value!r}")
    return int(value[0]), int(value[1])


def _logits_at_input_size(model: Model, x: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _window_starts(n: int, crop: int, stride: int) -> list[int]:
    """mmseg's grid: ``ceil((n - crop) / stride) + 1`` windows, the last ones clamped to the border."""
    grids = max(n - crop + stride - 1, 0) // stride + 1
    return [max(min(i * stride + crop, n) - crop, 0) for i in range(grids)]


def slide_logits(model: Model, image: torch.Tensor, num_classes: int | None, crop, stride) -> torch.Tensor:
    """Sliding-window logits ``Tensor[B, K, H, W]`` for ``image[B, 3, H, W]`` (normalised).

    Windows of size ``crop`` every ``stride`` pixels, clamped to the border; each window's logits are resized
    to the window (bilinear), summed into a canvas and divided by the overlap count. A side shorter than
    the crop gets a single window of the image's size (no padding). ``num_classes`` None: from the model.
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        raise ValueError(f"slide_logits: image must be a Tensor[B, 3, H, W], got {getattr(image, 'shape', image)!r}")
    (ch, cw), (sh, sw) = _pair(crop, "crop"), _pair(stride, "stride")
    b, _, h, w = image.shape
    out = count = None
    for y in _window_starts(h, ch, sh):
        for x in _window_starts(w, cw, sw):
            logits = _logits_at_input_size(model, image[:, :, y : y + ch, x : x + cw])
            if out is None:
                k = logits.shape[1]
                if num_classes is not None and k != num_classes:
                    raise ValueError(f"slide_logits: the model returns {k} classes, num_classes is {num_classes}")
                out, count = logits.new_zeros(b, k, h, w), logits.new_zeros(1, 1, h, w)
            out[:, :, y : y + ch, x : x + cw] += logits
            count[:, :, y : y + ch, x : x + cw] += 1
    return out / count


def logits_to_labels(logits: torch.Tensor, size: Sequence[int] | None) -> torch.Tensor:
    """``logits[B, K, h, w]`` -> int64 labels ``[B, H, W]``: bilinear (align_corners=False) to ``size`` = (H, W),
    then argmax; ``size`` None keeps (h, w). Equals Hugging Face ``post_process_semantic_segmentation``."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 4:
        got = getattr(logits, "shape", logits)
        raise ValueError(f"logits_to_labels: logits must be a Tensor[B, K, h, w], got {got!r}")
    if size is not None:
        logits = F.interpolate(logits, size=_pair(size, "size"), mode="bilinear", align_corners=False)
    return logits.argmax(dim=1)


def predict(
    model: torch.nn.Module,
    image: np.ndarray,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    scale=(2048, 512),
    ratios: Sequence[float] = (1.0,),
    flip: bool = False,
    mode: str = "whole",
    crop=None,
    stride=None,
) -> np.ndarray:
    """Label map ``np.ndarray[H, W]`` int64 for one ``HxWx3`` uint8 RGB image, at its original size.

    ``mean``/``std`` are in 0–255 pixel units (e.g. 123.675, 116.28, 103.53 / 58.395, 57.12, 57.375).
    ``ratios`` scale ``scale`` (ADE20K multi-scale: 0.75, 0.875, 1.0, 1.125, 1.25 with ``flip=True``);
    ``mode="slide"`` needs ``crop`` and ``stride`` (Cityscapes: (1024, 1024), (768, 768)). The model runs in
    eval mode under ``torch.inference_mode`` (its training flag is restored afterwards), on its own device.
    """
    mean_t, std_t = _check_predict_args(image, mean, std, scale, ratios, mode, crop, stride)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    h, w = image.shape[:2]
    with predicting(model):
        probs = 0
        for r in ratios:
            resized = aligned_resize(image, (int(scale[0] * r), int(scale[1] * r)))
            x = torch.from_numpy(np.ascontiguousarray(resized)).to(device).permute(2, 0, 1)[None].float()
            x = (x - mean_t.to(device)) / std_t.to(device)
            for flipped in (False, True) if flip else (False,):
                xi = x.flip(-1) if flipped else x
                if mode == "slide":
                    logits = slide_logits(model, xi, getattr(model, "num_classes", None), crop, stride)
                else:
                    logits = _logits_at_input_size(model, xi)
                p = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False).softmax(dim=1)
                probs = probs + (p.flip(-1) if flipped else p)
        labels = probs.argmax(dim=1)[0]
    return labels.cpu().numpy().astype(np.int64)


def _check_predict_args(image, mean, std, scale, ratios, mode, crop, stride) -> tuple[torch.Tensor, torch.Tensor]:
    check_image(image, "predict: image")
    mean_t = torch.as_tensor(mean, dtype=torch.float32)
    std_t = torch.as_tensor(std, dtype=torch.float32)
    if mean_t.shape != (3,) or std_t.shape != (3,) or bool((std_t <= 0).any()):
        raise ValueError(f"predict: mean and std must be 3 numbers (std > 0), got mean={mean!r}, std={std!r}")
    if float(mean_t.max()) <= 1.0 and float(std_t.max()) <= 1.0:
        raise ValueError(
            f"predict: mean/std are in 0-255 pixel units (e.g. 123.675 / 58.395), got mean={mean!r}, std={std!r} "
            "which look like 0-1 units; multiply them by 255"
        )
    if isinstance(ratios, (str, bytes)) or not isinstance(ratios, Sequence) or not ratios or min(ratios) <= 0:
        raise ValueError(f"predict: ratios must be a non-empty sequence of positive numbers, got {ratios!r}")
    _pair(scale, "predict: scale")
    if mode not in ("whole", "slide"):
        raise ValueError(f"predict: mode must be 'whole' or 'slide', got {mode!r}")
    if mode == "slide":
        _pair(crop, "predict: crop (mode='slide')")
        _pair(stride, "predict: stride (mode='slide')")
    elif crop is not None or stride is not None:
        raise ValueError("predict: crop and stride are only used with mode='slide'")
    return mean_t.view(1, 3, 1, 1), std_t.view(1, 3, 1, 1)
