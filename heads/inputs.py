"""The input check every head shares: a sequence of ``[B, C_i, H, W]`` feature maps matching ``in_channels``."""
from __future__ import annotations

from typing import Sequence

import torch


def check_features(head: str, features, in_channels: Sequence[int]) -> None:
    """Raise a TypeError/ValueError, naming ``head``, unless ``features`` holds one 4-d tensor per entry of
    ``in_channels``, with those channels and one batch size."""
    n = len(in_channels)
    if isinstance(features, torch.Tensor) or not isinstance(features, Sequence):
        raise TypeError(f"{head} expects a sequence of {n} feature maps, got {type(features).__name__}")
    if len(features) != n:
        raise ValueError(f"{head} expects {n} feature maps (channels {list(in_channels)}), got {len(features)}")
    batch = None
    for i, (f, c) in enumerate(zip(features, in_channels)):
        if not isinstance(f, torch.Tensor) or f.dim() != 4:
            shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise ValueError(f"{head}: feature {i} must be a 4-d tensor [B, C, H, W], got {shape}")
        batch = f.shape[0] if batch is None else batch
        if f.shape[1] != c or f.shape[0] != batch:
            raise ValueError(
                f"{head}: feature {i} has shape {tuple(f.shape)}; expected [B={batch}, C={c}, H, W] "
                f"(in_channels {list(in_channels)})"
            )
