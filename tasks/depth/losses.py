"""The GLPN training loss: scale-invariant log error (Eigen et al., 2014) at the prediction's resolution."""
from __future__ import annotations

import torch

from tasks.common.amp import float32

# log(pred) needs pred > 0. The sigmoid head guarantees it in fp32, but in fp16/bf16 it underflows to 0 for
# very negative logits, and log(0) = -inf turns the loss and every gradient into NaN. Clamping to the
# smallest normal fp32 (1.2e-38; log = -87.3) keeps the loss finite; the clamp passes no gradient to such
# pixels, which are saturated anyway.
_TINY = torch.finfo(torch.float32).tiny


@float32
def silog_loss(pred: torch.Tensor, target: torch.Tensor, lambd: float = 0.5) -> dict[str, torch.Tensor]:
    """``sqrt(mean(d²) - lambd · mean(d)²)`` with ``d = log(target) - log(pred)`` over pixels with target > 0.

    ``pred`` and ``target`` are depth ``[B, 1, H, W]`` or ``[B, H, W]`` of the same size (0 or less in the
    target marks a missing measurement); nothing is resized, as in GLPDepth and Hugging Face. Computed in
    fp32. With no valid pixel the loss is 0 (not NaN) and still differentiable. Returns
    ``{"loss_silog": Tensor[]}``.
    """
    for name, t in (("pred", pred), ("target", target)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dim() not in (3, 4):
            got = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise TypeError(f"silog_loss: {name} must be a floating-point Tensor[B, 1, H, W] or [B, H, W], got {got}")
        if t.dim() == 4 and t.shape[1] != 1:
            raise ValueError(f"silog_loss: {name} must have one channel, [B, 1, H, W], got {tuple(t.shape)}")
    if pred.shape[0] != target.shape[0] or pred.shape[-2:] != target.shape[-2:]:
        raise ValueError(
            f"silog_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same batch and "
            "H, W (resize the prediction or the target first)"
        )
    if not 0.0 <= lambd <= 1.0:
        raise ValueError(f"silog_loss: lambd must be in [0, 1] (the sqrt needs a non-negative term), got {lambd!r}")
    pred = pred.reshape(pred.shape[0], *pred.shape[-2:]).float()
    target = target.reshape(target.shape[0], *target.shape[-2:]).float()
    valid = target > 0
    if not bool(valid.any()):
        return {"loss_silog": pred.sum() * 0.0}  # keeps the graph: backward gives zero gradients
    d = torch.log(target[valid]) - torch.log(pred[valid].clamp(min=_TINY))
    # The radicand is >= (1 - lambd) * mean(d)^2 >= 0 mathematically; rounding can make it -0.0-ish.
    return {"loss_silog": torch.sqrt((d.square().mean() - lambd * d.mean().square()).clamp(min=0.0))}
