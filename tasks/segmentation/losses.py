"""The SegFormer training loss: pixel-wise cross-entropy at the label resolution."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tasks.common.amp import float32


@float32
def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> dict[str, torch.Tensor]:
    """Cross-entropy of ``logits[B, K, h, w]`` against labels ``target[B, H, W]`` (int64).

    The logits are upsampled to the label size (bilinear, align_corners=False), as in the original code and
    Hugging Face. The loss is the mean over pixels whose label is not ``ignore_index``; it is 0 (not NaN,
    and still differentiable) when every pixel is ignored, e.g. a crop that holds only padding.
    Returns ``{"loss_ce": Tensor[]}``.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 4 or not logits.is_floating_point():
        got = f"{tuple(logits.shape)} {logits.dtype}" if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TypeError(f"segmentation_loss: logits must be a floating-point Tensor[B, K, h, w], got {got}")
    if not isinstance(target, torch.Tensor) or target.dtype != torch.int64:
        got = target.dtype if isinstance(target, torch.Tensor) else type(target).__name__
        raise TypeError(f"segmentation_loss: target must be an int64 (long) label tensor [B, H, W], got {got}")
    if target.dim() != 3 or target.shape[0] != logits.shape[0]:
        raise ValueError(
            f"segmentation_loss: target must be [B, H, W] with B={logits.shape[0]} like the logits "
            f"{tuple(logits.shape)}, got {tuple(target.shape)}"
        )
    num_classes = logits.shape[1]
    valid = target != ignore_index
    # Checked here because CUDA reports an out-of-range label only as an opaque device-side assert.
    out_of_range = valid & ((target < 0) | (target >= num_classes))
    if bool(out_of_range.any()):
        bad = torch.unique(target[out_of_range])[:8].tolist()
        raise ValueError(
            f"segmentation_loss: labels {bad} are outside 0..{num_classes - 1} and are not ignore_index={ignore_index}"
        )
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    total = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    return {"loss_ce": total / valid.sum().clamp(min=1)}
