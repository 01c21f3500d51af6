"""The standard monocular-depth metrics (Eigen et al.; the GLPDepth / BTS / AdaBins protocol), per image
then averaged over images.

For each image, over its N valid pixels (``g`` = ground truth, ``p`` = prediction, metres):

- valid: ``min_depth < g < max_depth`` (strict; NaN and inf ground truth are invalid) inside the crop box;
- ``p``: inf -> ``max_depth``, NaN -> ``min_depth`` (GLPDepth / BTS), then clamped to ``[min_depth, max_depth]``
  (AdaBins), so every log below is finite;
- ``d1, d2, d3`` = fraction of pixels with ``max(g/p, p/g) < 1.25**k`` (strict);
- ``abs_rel`` = mean(|p - g| / g), ``sq_rel`` = mean((p - g)² / g), ``rmse`` = sqrt(mean((p - g)²)),
  ``rmse_log`` = sqrt(mean(e²)) with ``e = ln p - ln g``, ``log10`` = mean(|log10 p - log10 g|),
  ``silog`` = sqrt(mean(e²) - 0.5·mean(e)²) (the convention of GLPDepth's ``metrics.py`` and mmseg; BTS's
  ``100·sqrt(mean(e²) - mean(e)²)`` is a different number).

Each metric is averaged over images, not pooled over pixels (what every reference code reports; the two
differ whenever images have different valid-pixel counts). An image with no valid pixel has no metric:
it is skipped and counted in ``num_skipped`` rather than raising, because one hole-only frame should not
kill a long evaluation, nor silently pull the means (a 0 or NaN would); ``compute()`` warns when any
image was skipped, since on NYU or the 652 KITTI test frames that means the data is wrong.

Crop boxes, as ``[top:bottom, left:right]`` of the ground truth:

- ``"eigen"``: NYU's ``[45:471, 41:601]``, defined on 480×640 only (any other target size is an error);
- ``"garg"``: KITTI's fractions of the target size ``(H, W)``, ``[int(0.40810811 H):int(0.99189189 H),
  int(0.03594771 W):int(0.96405229 W)]``, for ground truth at the original (un-KB-cropped) size;
- ``None``: the whole image.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Union

import numpy as np
import torch

from tasks.common.distributed import all_reduce_sum

DepthMap = Union[torch.Tensor, np.ndarray]

METRIC_KEYS = ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog")
CROPS = ("eigen", "garg", None)
NYU_SIZE = (480, 640)
EIGEN_BOX = (45, 471, 41, 601)  # top, bottom, left, right on NYU's 480x640 ground truth


def crop_box(crop: Optional[str], height: int, width: int) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of the evaluated region of a ``height × width`` ground truth."""
    if crop == "eigen":
        if (height, width) != NYU_SIZE:
            raise ValueError(
                f"DepthMetrics: crop='eigen' is NYU's box {EIGEN_BOX} on 480x640 ground truth, got a "
                f"{height}x{width} target; evaluate at the dataset's full resolution, or use crop='garg' (KITTI) or None"
            )
        return EIGEN_BOX
    if crop == "garg":
        return int(0.40810811 * height), int(0.99189189 * height), int(0.03594771 * width), int(0.96405229 * width)
    if crop is None:
        return 0, height, 0, width
    raise ValueError(f"DepthMetrics: crop must be one of {CROPS}, got {crop!r}")


def _as_depth_tensor(x: DepthMap, name: str) -> torch.Tensor:
    """``Tensor[B, H, W]`` from ``[B, 1, H, W]`` or ``[B, H, W]`` floating-point depth."""
    if isinstance(x, np.ndarray):
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(
                f"DepthMetrics.update: {name} must hold floating-point depth in metres, got numpy dtype {x.dtype}"
                " (a uint16 PNG holds millimetres on NYU, 1/256 m on KITTI: convert first)"
            )
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, torch.Tensor):
        if not x.is_floating_point():
            raise TypeError(
                f"DepthMetrics.update: {name} must hold floating-point depth in metres, got torch dtype {x.dtype}"
            )
        x = x.detach()
    else:
        raise TypeError(f"DepthMetrics.update: {name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    if x.dim() == 4 and x.shape[1] == 1:
        return x[:, 0]
    if x.dim() == 3:
        return x
    raise ValueError(f"DepthMetrics.update: {name} must be [B, 1, H, W] or [B, H, W], got shape {tuple(x.shape)}")


def per_image_metrics(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``Tensor[B, 9]`` float64, the ``METRIC_KEYS`` of each image, from ``pred``, ``target`` ``[B, H, W]``
    (``pred`` already sanitised to positive finite values) and the bool mask ``valid`` ``[B, H, W]``.
    Rows of images without a valid pixel are NaN."""
    pred, target = pred.to(torch.float64), target.to(torch.float64)
    # Neutral values off the mask keep every term finite there; the mask then zeroes them.
    p = torch.where(valid, pred, torch.ones_like(pred))
    g = torch.where(valid, target, torch.ones_like(target))
    weight = valid.to(torch.float64)
    count = weight.sum(dim=(1, 2))

    def mean(values: torch.Tensor) -> torch.Tensor:
        return (values * weight).sum(dim=(1, 2)) / count

    ratio = torch.maximum(g / p, p / g)
    e = torch.log(p) - torch.log(g)
    mean_sq_log = mean(e**2)
    return torch.stack([
        mean((ratio < 1.25).to(torch.float64)),
        mean((ratio < 1.25**2).to(torch.float64)),
        mean((ratio < 1.25**3).to(torch.float64)),
        mean((p - g).abs() / g),
        mean((p - g) ** 2 / g),
        mean((p - g) ** 2).sqrt(),
        mean_sq_log.sqrt(),
        mean((torch.log10(p) - torch.log10(g)).abs()),
        # >= 0.5 mean(e²) >= 0 since mean(e)² <= mean(e²); the clamp only absorbs rounding.
        (mean_sq_log - 0.5 * mean(e) ** 2).clamp_min(0).sqrt(),
    ], dim=1)


class DepthMetrics:
    """Accumulates, in float64, the sum of each metric over images, the number of images evaluated and the
    number skipped (no valid pixel); ``compute()`` all-reduces those 11 numbers and divides."""

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 10.0, crop: Optional[str] = "eigen"):
        for name, value in (("min_depth", min_depth), ("max_depth", max_depth)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"DepthMetrics: {name} must be a finite number, got {value!r}")
        if not 0 < min_depth < max_depth:
            raise ValueError(
                f"DepthMetrics: need 0 < min_depth < max_depth (metres; min_depth > 0 keeps the logs finite), "
                f"got min_depth={min_depth}, max_depth={max_depth}"
            )
        if crop not in CROPS:
            raise ValueError(f"DepthMetrics: crop must be one of {CROPS}, got {crop!r}")
        self.min_depth, self.max_depth, self.crop = float(min_depth), float(max_depth), crop
        self.reset()

    def reset(self) -> None:
        # [sum of each of the 9 metrics, images evaluated, images skipped]
        self._totals = torch.zeros(len(METRIC_KEYS) + 2, dtype=torch.float64)
        self.counts: Optional[dict[str, int]] = None  # set by compute()

    def update(self, pred: DepthMap, target: DepthMap) -> None:
        """``pred``, ``target``: depth in metres, ``[B, 1, H, W]`` or ``[B, H, W]`` (torch or numpy, floating
        point), ``target`` at the dataset's full resolution and ``pred`` already resized to it."""
        pred = _as_depth_tensor(pred, "pred")
        target = _as_depth_tensor(target, "target")
        if pred.shape != target.shape:
            raise ValueError(
                f"DepthMetrics.update: pred is {tuple(pred.shape)} and target {tuple(target.shape)} as [B, H, W]; "
                "resize the prediction to the ground truth's full resolution first (and batch them alike)"
            )
        pred = pred.to(device=target.device, dtype=torch.float64)
        target = target.to(torch.float64)
        top, bottom, left, right = crop_box(self.crop, *target.shape[-2:])
        inside = torch.zeros(target.shape[-2:], dtype=torch.bool, device=target.device)
        inside[top:bottom, left:right] = True
        valid = (target > self.min_depth) & (target < self.max_depth) & inside
        pred = torch.where(torch.isinf(pred), torch.full_like(pred, self.max_depth), pred)
        pred = torch.where(torch.isnan(pred), torch.full_like(pred, self.min_depth), pred)
        pred = pred.clamp(self.min_depth, self.max_depth)
        metrics = per_image_metrics(pred, target, valid).cpu()
        has_pixels = valid.flatten(1).any(dim=1).cpu()
        self._totals[: len(METRIC_KEYS)] += metrics[has_pixels].sum(dim=0)
        self._totals[-2] += float(has_pixels.sum())
        self._totals[-1] += float((~has_pixels).sum())

    @property
    def num_images(self) -> int:
        """Images evaluated by this process (not reduced across ranks)."""
        return int(self._totals[-2])

    @property
    def num_skipped(self) -> int:
        """Images of this process skipped for having no valid pixel (not reduced across ranks)."""
        return int(self._totals[-1])

    def _reduced_totals(self) -> torch.Tensor:
        return all_reduce_sum(self._totals.clone())

    def compute(self) -> dict[str, float]:
        """``{key: float}`` for the nine ``METRIC_KEYS``, each the mean over evaluated images (NaN if none).

        Under ``torch.distributed`` every rank must call this (it all-reduces); all get the same. The
        reduced counts are left in ``self.counts = {"images": n, "skipped": s}``.
        """
        totals = self._reduced_totals()
        images, skipped = int(totals[-2]), int(totals[-1])
        self.counts = {"images": images, "skipped": skipped}
        if skipped:
            warnings.warn(
                f"DepthMetrics: {skipped} of {images + skipped} images had no valid ground-truth pixel "
                f"({self.min_depth} < depth < {self.max_depth}, crop={self.crop!r}) and were left out of the means",
                stacklevel=2,
            )
        means = totals[: len(METRIC_KEYS)] / images if images else torch.full((len(METRIC_KEYS),), math.nan)
        return {key: float(value) for key, value in zip(METRIC_KEYS, means)}


def relative_difference(first: list, second: list) -> float:
    """Mean over images of ``mean(|b - a| / a)`` over the pixels where depth map ``a`` is positive: how far a
    second model's depth (e.g. INT8) is from a first's (fp32) on the same images (``tools/export.py --int8``)."""
    errors = []
    for a, b in zip(first, second):
        a, b = torch.as_tensor(a).float(), torch.as_tensor(b).float()
        valid = a > 0
        errors.append(float(((b - a).abs()[valid] / a[valid]).mean()) if valid.any() else 0.0)
    return float(np.mean(errors)) if errors else 0.0
