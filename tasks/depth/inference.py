"""Test-time depth prediction for one image at its own size (the GLPDepth protocol: full resolution, no resize).

The model contract (``tasks.depth.GLPN``): ``model(pixel_values)`` with ``pixel_values[B, 3, H, W]`` RGB in
[0, 1] (no mean/std normalisation) returns depth in metres ``[B, 1, H, W]``. Its encoder/decoder halves the
size five times and upsamples back by 2s, so an ``H`` or ``W`` that is not a multiple of ``size_divisor``
(32) is padded at the bottom/right by repeating the edge pixels and the prediction is cropped back. Padding,
unlike resizing (what Hugging Face's GLPN processor does), keeps the apparent size of objects, which is a
depth cue. NYU's 480×640 needs no padding.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from tasks.common.images import check_image
from tasks.common.model import predicting

Model = Callable[[torch.Tensor], torch.Tensor]  # Tensor[B, 3, H, W] in [0, 1] -> depth Tensor[B, 1, H, W]


def _forward(model: Model, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (x.shape[0], 1, *x.shape[-2:]):
        raise ValueError(
            f"predict_depth: the model must return depth Tensor[B, 1, H, W] = {(x.shape[0], 1, *x.shape[-2:])} "
            f"for input {tuple(x.shape)}, got {tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}"
        )
    return out


def predict_depth(model: torch.nn.Module, image: np.ndarray, *, flip: bool = False, size_divisor: int = 32,
                  mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Depth ``float32 [H, W]`` in metres for ``image``, a ``uint8 [H, W, 3]`` RGB array.

    ``mean``/``std`` (0-1 units) normalise the input, ``(rgb / 255 - mean) / std``: GLPN's are 0 and 1
    (``GLPN.predict`` passes its ``model.preprocessing``). ``flip=True`` is AdaBins' test-time augmentation, ``0.5 * (pred(x) + hflip(pred(hflip(x))))``; GLPDepth's
    published numbers use no flip, so report flipped results separately. Predictions are not clipped here
    (``DepthMetrics`` sanitises and clamps). The model runs in eval mode under ``torch.inference_mode`` on its
    own device; its training flag is restored afterwards.
    """
    check_image(image, "predict_depth: image")
    if isinstance(size_divisor, bool) or not isinstance(size_divisor, int) or size_divisor < 1:
        raise ValueError(f"predict_depth: size_divisor must be a positive int, got {size_divisor!r}")
    height, width = image.shape[:2]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with predicting(model):
        x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float() / 255.0
        x = (x - torch.tensor(mean, device=device).view(1, 3, 1, 1)) / torch.tensor(std, device=device).view(1, 3, 1, 1)
        pad_h, pad_w = -height % size_divisor, -width % size_divisor
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        depth = _forward(model, x)
        if flip:
            depth = 0.5 * (depth + _forward(model, x.flip(-1)).flip(-1))
    return depth[0, 0, :height, :width].float().cpu().numpy()
