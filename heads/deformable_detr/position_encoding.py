"""Sine position encodings: for feature maps (from the padding mask) and for boxes (two-stage queries)."""
from __future__ import annotations

import math

import torch
from torch import nn


def _interleave_sin_cos(x: torch.Tensor) -> torch.Tensor:
    """``x[..., F]`` -> ``(sin x0, cos x1, sin x2, cos x3, ...)[..., F]``."""
    return torch.stack((x[..., 0::2].sin(), x[..., 1::2].cos()), dim=-1).flatten(-2)


def _frequencies(num_feats: int, temperature: float, device, dtype) -> torch.Tensor:
    k = torch.arange(num_feats, device=device).to(dtype)
    return temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / num_feats)


class PositionEmbeddingSine(nn.Module):
    """``forward(padding_mask[B, H, W] bool, True = padding) -> Tensor[B, 2 * num_feats, H, W]`` float32.

    Channels are ``[y (num_feats), x (num_feats)]``. Coordinates count real pixels along each row/column
    (``cumsum`` of the not-padded mask), shifted by ``offset`` and normalised by the last count to
    ``[0, scale]``. Deformable DETR uses ``offset=-0.5`` (pixel centres); DETR uses 0.
    """

    def __init__(
        self,
        num_feats: int = 128,
        temperature: float = 10000.0,
        normalize: bool = True,
        scale: float = 2 * math.pi,
        offset: float = -0.5,
        eps: float = 1e-6,
    ):
        super().__init__()
        self.num_feats, self.temperature = num_feats, temperature
        self.normalize, self.scale, self.offset, self.eps = normalize, scale, offset, eps

    def forward(self, padding_mask: torch.Tensor) -> torch.Tensor:
        not_mask = (~padding_mask).float()
        y = not_mask.cumsum(1)
        x = not_mask.cumsum(2)
        if self.normalize:
            y = (y + self.offset) / (y[:, -1:, :] + self.eps) * self.scale
            x = (x + self.offset) / (x[:, :, -1:] + self.eps) * self.scale
        dim_t = _frequencies(self.num_feats, self.temperature, padding_mask.device, torch.float32)
        pos_y = _interleave_sin_cos(y[..., None] / dim_t)
        pos_x = _interleave_sin_cos(x[..., None] / dim_t)
        return torch.cat((pos_y, pos_x), dim=-1).permute(0, 3, 1, 2)


def box_sine_embedding(
    boxes: torch.Tensor, num_feats: int = 128, temperature: float = 10000.0, scale: float = 2 * math.pi
) -> torch.Tensor:
    """``boxes[B, N, 4]`` in [0, 1] -> ``Tensor[B, N, 4 * num_feats]``: each coordinate's interleaved
    sin/cos embedding, concatenated in (cx, cy, w, h) order (the two-stage query embedding)."""
    dim_t = _frequencies(num_feats, temperature, boxes.device, torch.float32)
    pos = boxes.float()[..., None] * scale / dim_t  # [B, N, 4, F]
    return _interleave_sin_cos(pos).flatten(2).to(boxes.dtype)
