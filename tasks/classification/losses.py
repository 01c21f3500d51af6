"""Cross-entropy with soft targets: what MixUp/CutMix with label smoothing train against (timm's
``SoftTargetCrossEntropy``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tasks.common.amp import float32


@float32
def soft_target_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean_b( -sum_k target[b, k] * log_softmax(logits)[b, k] )``.

    ``logits``: ``[B, K]``; ``target``: ``[B, K]`` probabilities (rows sum to 1), e.g. mixed and smoothed
    one-hot labels. Computed in float32 (also under autocast) so that small target masses are not rounded away.
    """
    if logits.dim() != 2 or target.shape != logits.shape:
        raise ValueError(f"logits must be [B, K] and target the same shape, got {tuple(logits.shape)} and {tuple(target.shape)}")
    return torch.sum(-target.float() * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def classification_loss(logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"loss_cls": soft-target cross-entropy}`` (see ``soft_target_cross_entropy``)."""
    return {"loss_cls": soft_target_cross_entropy(logits, target)}
