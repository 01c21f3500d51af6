"""The GLPN decoder and depth head (Kim et al., "Global-Local Path Networks for Monocular Depth Estimation
with Vertical CutDepth", 2022).

Per stage, deepest first, with features ``c_i[B, C_i, H_i, W_i]`` at strides 4, 8, 16, 32 and D channels:

    x = Conv1x1(c_4)                                        stride 32
    x = SFF(local=Conv1x1(c_i), global=up(x))  for i = 3, 2, 1   (c_1 as is when C_1 == D)
    y = up(up(x))                                           stride 1
    depth = sigmoid(Conv3x3(ReLU(Conv3x3(y)))) * max_depth  D -> D -> 1

``up`` is a bilinear x2 upsampling (align_corners=False). Selective Feature Fusion (SFF) gates the two
inputs with a 2-channel attention map a = sigmoid(conv3(ReLU(BN(conv2(ReLU(BN(conv1(cat[local, global])))))))),
out = local * a[:, 0] + global * a[:, 1]; convs 3x3 with bias, 2D -> D -> D/2 -> 2.

Sizes: a stage's map is half the previous one's, rounded up, so ``up(x)`` can be one row or column larger
than the skip feature; the extra border row/column is cropped, which keeps the pixel grid of the exact x2
case (Hugging Face raises on such sizes). The output is ``4 * H_1 x 4 * W_1`` and is cropped to ``size``
when given (the input size): for the sizes Hugging Face accepts the result is its output, cropped.

Speed, with outputs equal up to fp32 rounding: in eval mode the BatchNorms are folded into the convolutions
(computed in ``forward`` from the real parameters, so training and state dicts are unaffected); activations
run in place; the last upsampling and the two full-resolution 3x3 convs run as convs over its four 2x2
phases at half resolution, so the D-channel full-resolution map (78 MB at 480x640) is never built and only
the 1-channel depth is shuffled to full size (``_up2_conv3x3``, ``_phase_conv3x3``). The parameters keep
Hugging Face's layout (``stages.{i}.convolution``, ``stages.{i}.fusion.convolutional_layer{1,2,3}``; its
``head.head.{0,2}`` is our ``depth.{0,2}``) so published weights map 1:1.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .inputs import check_features
from .precision import float32
from .recompute import recompute


def _conv_bn_relu(block: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``ReLU(BN(Conv(x)))`` of a ``Sequential(Conv2d, BatchNorm2d, ReLU)``; BN folded in eval mode."""
    conv, bn = block[0], block[1]
    if bn.training or bn.running_mean is None:
        x = bn(conv(x))
    else:
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
        shift = (bias - bn.running_mean) * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        x = F.conv2d(x, conv.weight * scale[:, None, None, None], shift, padding=conv.padding)
    return F.relu_(x)  # neither backward (conv, BN) needs its output, so in place is safe


def _crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The top-left ``size`` (h, w) of ``x[..., H, W]``, h <= H and w <= W.

    Traced (``torch.export``, ``torch.compile``), a slice ``x[..., :h]`` asks "h < H?" and the answer at the
    example size (often h == H) is baked into the graph, which is then wrong at sizes where the other answer
    holds; gathering rows ``arange(h)`` asks nothing. Eager code slices (a view, no copy).
    """
    if not torch.compiler.is_compiling():
        return x[..., : size[0], : size[1]]
    rows = torch.arange(size[0], device=x.device)
    cols = torch.arange(size[1], device=x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def _up2(x: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
    """Bilinear x2 (align_corners=False), cropped to ``size`` (at most one row/column smaller)."""
    x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    return x if size is None else _crop(x, size)


# Bilinear x2 (align_corners=False) along one axis, as seen by a 3x3 conv at the output resolution: output
# 2i + p under conv tap j (offset j - 1) is sum_s _UP_TAPS[p, j, s] * y[i - 1 + s] (edge rows repeated).
_UP_TAPS = torch.tensor([
    [[0.75, 0.25, 0.0], [0.25, 0.75, 0.0], [0.0, 0.75, 0.25]],
    [[0.25, 0.75, 0.0], [0.0, 0.75, 0.25], [0.0, 0.25, 0.75]],
])


def _s2d_taps() -> torch.Tensor:
    """``[p, P, a, j]`` = 1 where a 3x3 conv's full-resolution tap j (offset j - 1), seen from output phase
    p, reads input phase P at low-resolution offset a - 1; i.e. j - 1 = 2 (a - 1) + P - p."""
    taps = torch.zeros(2, 2, 3, 3)
    for p in range(2):
        for phase in range(2):
            for a in range(3):
                j = 2 * (a - 1) + phase - p + 1
                if 0 <= j <= 2:
                    taps[p, phase, a, j] = 1.0
    return taps


_S2D_TAPS = _s2d_taps()


def _up2_conv3x3(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``conv3x3(up2(y), padding=1)`` as ``Tensor[B, 4 O, h, w]`` in ``pixel_shuffle`` order, never
    materialising ``up2(y)``: each of the 4 output phases is a 3x3 conv of the edge-padded ``y``.

    Same MACs as the full-resolution conv, but no 4x larger input is written and read. The conv's zero
    padding of ``up2(y)`` is no padding of ``y``, so the outermost full-resolution rows and columns are
    recomputed directly from 2-pixel strips of ``y`` (h, w >= 2 always: ``y`` is itself upsampled).
    """
    b, _, h, w = y.shape
    o = weight.shape[0]
    taps = _UP_TAPS.to(weight)
    kernel = torch.einsum("ocjl,pjs,qlt->opqcst", weight, taps, taps).reshape(4 * o, -1, 3, 3)
    phase_bias = None if bias is None else bias.repeat_interleave(4)
    out = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), kernel, phase_bias)
    phases = out.view(b, o, 2, 2, h, w)  # [B, O, p, q, i, j] = full-res (2i + p, 2j + q)
    top = F.conv2d(_up2(y[..., :2, :])[..., :2, :], weight, bias, padding=1)[..., 0, :]
    # Negative indices, not h - 1 / w - 1: a symbolic index would specialise torch.export to the example size.
    bottom = F.conv2d(_up2(y[..., -2:, :])[..., 2:, :], weight, bias, padding=1)[..., 1, :]
    left = F.conv2d(_up2(y[..., :2])[..., :2], weight, bias, padding=1)[..., 0]
    right = F.conv2d(_up2(y[..., -2:])[..., 2:], weight, bias, padding=1)[..., 1]
    # Strided slices, not a view as [..., w, 2]: torch.export cannot prove 2w % w == 0 for symbolic w.
    for q in range(2):
        phases[:, :, 0, q, 0, :] = top[..., q::2]
        phases[:, :, 1, q, -1, :] = bottom[..., q::2]
        phases[:, :, q, 0, :, 0] = left[..., q::2]
        phases[:, :, q, 1, :, -1] = right[..., q::2]
    return out


def _phase_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``conv3x3(pixel_shuffle(x, 2), padding=1)`` in phases: ``x[B, 4 C, h, w] -> Tensor[B, 4 O, h, w]``.

    Exact with plain zero padding (full-resolution rows -2, -1 are low-resolution row -1); 4x the MACs of
    the full-resolution conv, which for O = 1 costs less than shuffling C channels to full resolution.
    """
    taps = _S2D_TAPS.to(weight)
    kernel = torch.einsum("ocjl,pPaj,qQbl->opqcPQab", weight, taps, taps).reshape(4 * weight.shape[0], -1, 3, 3)
    return F.conv2d(x, kernel, None if bias is None else bias.repeat_interleave(4), padding=1)


class SelectiveFeatureFusion(nn.Module):
    """``forward(local, global_: Tensor[B, D, H, W]) -> Tensor[B, D, H, W]``: per-pixel gated sum of the two."""

    def __init__(self, dim: int):
        super().__init__()
        self.convolutional_layer1 = nn.Sequential(
            nn.Conv2d(2 * dim, dim, 3, padding=1), nn.BatchNorm2d(dim), nn.ReLU()
        )
        self.convolutional_layer2 = nn.Sequential(
            nn.Conv2d(dim, dim // 2, 3, padding=1), nn.BatchNorm2d(dim // 2), nn.ReLU()
        )
        self.convolutional_layer3 = nn.Conv2d(dim // 2, 2, 3, padding=1)

    def forward(self, local: torch.Tensor, global_: torch.Tensor) -> torch.Tensor:
        x = _conv_bn_relu(self.convolutional_layer1, torch.cat([local, global_], dim=1))
        x = _conv_bn_relu(self.convolutional_layer2, x)
        attn = torch.sigmoid(self.convolutional_layer3(x))
        return torch.addcmul(local * attn[:, :1], global_, attn[:, 1:])


class GLPNStage(nn.Module):
    """A skip feature's 1x1 reduction to D channels (none when it has D already) and its fusion (none in
    the deepest stage)."""

    def __init__(self, in_channels: int, dim: int, fuse: bool):
        super().__init__()
        self.convolution = nn.Conv2d(in_channels, dim, 1) if in_channels != dim else nn.Identity()
        self.fusion = SelectiveFeatureFusion(dim) if fuse else None


class GLPNHead(nn.Module):
    """``forward(features: Sequence[Tensor[B, C_i, H_i, W_i]], size=None) -> Tensor[B, 1, 4 H_1, 4 W_1]``
    depth in (0, max_depth), or ``Tensor[B, 1, *size]`` when ``size`` (at most ``4 H_1 x 4 W_1``) is given.

    ``features`` are in stride order (4, 8, 16, 32); each map is half the previous one's size, rounded up.
    """

    def __init__(self, in_channels: Sequence[int], decoder_dim: int = 64, max_depth: float = 10.0):
        super().__init__()
        if isinstance(in_channels, (str, bytes)) or not isinstance(in_channels, Sequence) or not in_channels:
            raise TypeError(f"GLPNHead: in_channels must be a non-empty sequence of ints, got {in_channels!r}")
        for name, value in [("in_channels", c) for c in in_channels] + [("decoder_dim", decoder_dim)]:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GLPNHead: {name} must be a positive int, got {value!r}")
        if decoder_dim < 2:
            raise ValueError(f"GLPNHead: decoder_dim must be at least 2 (SFF halves it), got {decoder_dim}")
        if isinstance(max_depth, bool) or not isinstance(max_depth, (int, float)) or not max_depth > 0:
            raise ValueError(f"GLPNHead: max_depth must be a positive number, got {max_depth!r}")
        self.in_channels = tuple(in_channels)
        self.decoder_dim = decoder_dim
        self.max_depth = float(max_depth)
        self.stages = nn.ModuleList(
            GLPNStage(c, decoder_dim, fuse=i > 0) for i, c in enumerate(reversed(self.in_channels))
        )
        self.depth = nn.Sequential(
            nn.Conv2d(decoder_dim, decoder_dim, 3, padding=1), nn.ReLU(), nn.Conv2d(decoder_dim, 1, 3, padding=1)
        )
        self.grad_checkpointing = False  # recompute the decoder's activations in the backward

    def forward(self, features: Sequence[torch.Tensor], size: Sequence[int] | None = None) -> torch.Tensor:
        if not torch.compiler.is_compiling():  # eager inputs are checked; traced sizes are symbolic
            self._check(features, size)
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            depth = recompute(self, self._decode, *features)  # the full-resolution maps are recomputed, not kept
        else:
            depth = self._decode(*features)
        return depth if size is None else _crop(depth, size)

    def _decode(self, *features: torch.Tensor) -> torch.Tensor:
        x = None
        for stage, f in zip(self.stages, reversed(features)):
            local = stage.convolution(f)
            x = local if x is None else stage.fusion(local, _up2(x, local.shape[-2:]))
        conv1, conv2 = self.depth[0], self.depth[2]
        if torch.compiler.is_exporting():
            # An exported graph takes the plain form (two up-samplings, then full-resolution convs), which a
            # runtime runs as standard ops: exported in the phase form, GLPN-b4 ran 2.6x slower in ONNX
            # Runtime than eager; in this form as fast (BENCHMARKS.md, deployment).
            depth = torch.sigmoid(float32(conv2(F.relu(conv1(_up2(_up2(x))))))) * self.max_depth
        else:
            x = F.relu_(_up2_conv3x3(_up2(x), conv1.weight, conv1.bias))  # full-res map as 2x2 phases at 1/2
            # float32 from the last conv on (under autocast too): bf16 depth would be rounded to 1/256 of itself
            depth = F.pixel_shuffle(torch.sigmoid(float32(_phase_conv3x3(x, conv2.weight, conv2.bias))).mul(self.max_depth), 2)
        return depth

    def _check(self, features, size) -> None:
        check_features("GLPNHead", features, self.in_channels)
        for i in range(1, len(features)):
            (h, w), (ph, pw) = features[i].shape[2:], features[i - 1].shape[2:]
            if not (0 <= 2 * h - ph <= 1 and 0 <= 2 * w - pw <= 1):
                raise ValueError(
                    f"GLPNHead: feature {i} is {h}x{w} but feature {i - 1} is {ph}x{pw}; each map must "
                    "be half the previous one's size, rounded up"
                )
        if size is not None:
            full = (4 * features[0].shape[2], 4 * features[0].shape[3])
            if len(size) != 2 or not (0 < size[0] <= full[0] and 0 < size[1] <= full[1]):
                raise ValueError(f"GLPNHead: size must be (H, W) with at most the output size {full}, got {size!r}")

    def extra_repr(self) -> str:
        return f"in_channels={list(self.in_channels)}, decoder_dim={self.decoder_dim}, max_depth={self.max_depth:g}"
