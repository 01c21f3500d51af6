"""The SegFormer all-MLP decoder (Xie et al., "SegFormer: Simple and Efficient Design for Semantic
Segmentation with Transformers", 2021), computed without materialising the concatenated features.

The reference computation, per stage i with features ``c_i[B, C_i, H_i, W_i]`` (stride 4, 8, 16, 32):

    z_i = Linear_i(c_i)                     token-wise C_i -> D, at (H_i, W_i)
    u_i = bilinear(z_i, size of c_1)        align_corners=False
    f   = Conv1x1_fuse(cat[u_n, ..., u_1])  4D -> D, no bias; note the REVERSED stage order
    y   = Classifier(Dropout(ReLU(BN(f))))  D -> K, with bias

Everything before the BatchNorm is linear, and bilinear resampling commutes with channel mixing and
keeps constants (its weights sum to one), so with ``W_i`` the fuse weight's input block for stage i:

    f = sum_i bilinear(W_i Linear_i.weight · c_i) + sum_i W_i Linear_i.bias

The composed ``D x C_i`` weights are built in ``forward`` from the real parameters (cheap, differentiable;
training and state dicts are unaffected) and applied at each stage's own resolution, so only D channels
per stage are resampled and the 4D -> D convolution at stride 4 (~39 GMACs for D = 768 at 512²) is never
run. In eval mode the BatchNorm is folded into the same weights. The parameters keep the reference layout
(``linear_c.{i}``, ``linear_fuse`` [D, 4D, 1, 1], ``bn``, ``classifier``) so published weights map 1:1.

Tensors are handled as ``[B, H, W, C]`` views of channels-last NCHW memory (what the backbone returns):
the token-wise linears are plain GEMMs over the last dimension, with no layout copies.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .inputs import check_features
from .precision import float32
from .recompute import recompute


class SegFormerHead(nn.Module):
    """``forward(features: Sequence[Tensor[B, C_i, H_i, W_i]]) -> Tensor[B, K, H_1, W_1]`` logits.

    ``features[0]`` is the stride-4 map whose size the logits take; the logits are NCHW in
    channels-last memory. ``dropout`` is channel-wise (``nn.Dropout2d``, as in the original code; Hugging
    Face uses element-wise dropout — a difference in training only).
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, embed_dim: int = 256, dropout: float = 0.1):
        super().__init__()
        if isinstance(in_channels, (str, bytes)) or not isinstance(in_channels, Sequence) or not in_channels:
            raise TypeError(f"SegFormerHead: in_channels must be a non-empty sequence of ints, got {in_channels!r}")
        checks = [("in_channels", c) for c in in_channels] + [("num_classes", num_classes), ("embed_dim", embed_dim)]
        for name, value in checks:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SegFormerHead: {name} must be a positive int, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"SegFormerHead: dropout must be in [0, 1), got {dropout!r}")
        self.in_channels = tuple(in_channels)
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.linear_c = nn.ModuleList(nn.Linear(c, embed_dim) for c in in_channels)
        self.linear_fuse = nn.Conv2d(len(in_channels) * embed_dim, embed_dim, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(embed_dim)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(embed_dim, num_classes, kernel_size=1)
        self.grad_checkpointing = False  # recompute the decoder's activations in the backward
        self._init_weights()

    def _init_weights(self) -> None:
        # Matters only when the head trains from scratch: trunc-normal token MLPs like the encoder's linears,
        # He (fan-out) init for the fuse conv that feeds a ReLU as mmcv's ConvModule does, and small logits
        # (std 0.01) as mmseg's decode heads start with.
        for linear in self.linear_c:
            nn.init.trunc_normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)
        nn.init.kaiming_normal_(self.linear_fuse.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def composed_weights(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``([W_i · Linear_i.weight: Tensor[D, C_i]], sum_i W_i · Linear_i.bias: Tensor[D])``.

        ``W_i`` is stage i's input block of the fuse conv; the blocks are in reversed stage order.
        """
        d, n = self.embed_dim, len(self.linear_c)
        fuse = self.linear_fuse.weight.view(d, n * d)
        blocks = [fuse[:, (n - 1 - i) * d : (n - i) * d] for i in range(n)]
        weights = [block @ linear.weight for block, linear in zip(blocks, self.linear_c)]
        bias = sum(block @ linear.bias for block, linear in zip(blocks, self.linear_c))
        return weights, bias

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        check_features("SegFormerHead", features, self.in_channels)
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            # the stride-4 maps (accumulator, BN input, classifier input) are recomputed, not kept
            return recompute(self, self._decode, *features)
        return self._decode(*features)

    def _decode(self, *features: torch.Tensor) -> torch.Tensor:
        weights, bias = self.composed_weights()
        fold_bn = not self.bn.training and self.bn.running_mean is not None
        if fold_bn:  # eval BatchNorm is a per-channel affine map: fold it into the linear part
            scale = torch.rsqrt(self.bn.running_var + self.bn.eps)
            if self.bn.weight is not None:
                scale = scale * self.bn.weight
            shift = self.bn.bias if self.bn.bias is not None else torch.zeros_like(scale)
            weights = [w * scale[:, None] for w in weights]
            bias = (bias - self.bn.running_mean) * scale + shift
        size = features[0].shape[-2:]
        # Stage 1 is already at the output size (a same-size bilinear resize is the identity): it starts
        # the [B, H1, W1, D] accumulator and carries the whole bias.
        x = F.linear(features[0].permute(0, 2, 3, 1), weights[0], bias)
        for c, w in zip(features[1:], weights[1:]):
            z = F.linear(c.permute(0, 2, 3, 1), w).permute(0, 3, 1, 2)  # channels-last [B, D, H_i, W_i]
            x = x.add_(F.interpolate(z, size=size, mode="bilinear", align_corners=False).permute(0, 2, 3, 1))
        x = x.permute(0, 3, 1, 2)
        if not fold_bn:
            x = self.bn(x)
        x = self.dropout(F.relu_(x))  # no backward formula saved x, so in place is safe
        logits = F.linear(x.permute(0, 2, 3, 1), self.classifier.weight.flatten(1), self.classifier.bias)
        return float32(logits.permute(0, 3, 1, 2))  # float32 under autocast too, for the loss and the argmax

    def extra_repr(self) -> str:
        return f"in_channels={list(self.in_channels)}, num_classes={self.num_classes}, embed_dim={self.embed_dim}"
