"""torchvision's ResNet-50 as a backbone: ``stem`` then ``stage1`` ... ``stage4`` (= layer1 ... layer4).

Frozen batch norm (``norm_layer="frozen_bn"``) is what DETR and Deformable-DETR train with; the published
Deformable-DETR checkpoints use this backbone.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck
from torchvision.models.resnet import ResNet as _TorchvisionResNet
from torchvision.ops.misc import FrozenBatchNorm2d

from .base import STAGE_NAMES, Backbone
from .recompute import recompute
from .registry import register_backbone
from .weights import ConvertedWeights, RenameRules, find_prefix

_NORMS = {"bn": nn.BatchNorm2d, "frozen_bn": FrozenBatchNorm2d}


class ResNetStage(nn.Sequential):
    """torchvision's ``layerN`` (the same children, so the same state-dict keys); with ``grad_checkpointing`` each
    bottleneck's activations are recomputed in the backward instead of kept (mmdet's ``with_cp``)."""

    def __init__(self, *blocks: nn.Module, grad_checkpointing: bool = False):
        super().__init__(*blocks)
        self.grad_checkpointing = grad_checkpointing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        use_checkpoint = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for block in self:
            x = recompute(block, block, x) if use_checkpoint else block(x)
        return x


class ResNet(Backbone):
    """``forward(x[B, C, H, W]) -> {stage name: Tensor}``; strides 4, 8, 16, 32 (16 and 32 become
    8 / 16 where ``replace_stride_with_dilation`` asks for dilation, as in DC5)."""

    def __init__(
        self,
        layers: Sequence[int] = (3, 4, 6, 3),
        out_features=None,
        out_indices=None,
        *,
        num_channels: int = 3,
        norm_layer: str = "bn",
        frozen_stages: int = -1,
        replace_stride_with_dilation: Sequence[bool] = (False, False, False),
        grad_checkpointing: bool = False,
        name: str = "resnet50",
    ):
        super().__init__(out_features, out_indices)
        if norm_layer not in _NORMS:
            raise ValueError(f"norm_layer must be one of {sorted(_NORMS)}, got {norm_layer!r}")
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in -1..4 (0 freezes the stem only), got {frozen_stages}")
        self.name = name
        self.num_channels = num_channels
        self.frozen_stages = frozen_stages
        net = _TorchvisionResNet(
            Bottleneck,
            list(layers),
            norm_layer=_NORMS[norm_layer],
            replace_stride_with_dilation=list(replace_stride_with_dilation),
        )
        if num_channels != 3:
            net.conv1 = nn.Conv2d(num_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.stem = nn.Sequential()
        for part in ("conv1", "bn1", "relu", "maxpool"):
            self.stem.add_module(part, getattr(net, part))
        stride = 4
        for i, stage_name in enumerate(STAGE_NAMES):
            self.add_module(stage_name, ResNetStage(*getattr(net, f"layer{i + 1}"), grad_checkpointing=grad_checkpointing))
            if i > 0 and not replace_stride_with_dilation[i - 1]:
                stride *= 2
            self.feature_channels[stage_name] = 256 * 2**i
            self.feature_strides[stage_name] = stride
        self.freeze_stages()

    def freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        for module in [self.stem, *(getattr(self, s) for s in STAGE_NAMES[: self.frozen_stages])]:
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)

    def convert_state_dict(self, state_dict) -> ConvertedWeights:
        return convert_resnet_state_dict(state_dict)


_RULES = {
    "torchvision": RenameRules([(r"^(conv1|bn1)\.", r"stem.\1."), (r"^layer(\d)\.", r"stage\1.")]),
    # Hugging Face ResNetModel / ResNetBackbone (``ResNetConfig``): embedder, encoder.stages.N.layers.M.
    "huggingface-resnet": RenameRules([
        (r"^embedder\.embedder\.convolution\.", "stem.conv1."),
        (r"^embedder\.embedder\.normalization\.", "stem.bn1."),
        (r"^encoder\.stages\.(\d)\.layers\.(\d+)\.shortcut\.convolution\.", lambda m: f"stage{int(m[1]) + 1}.{m[2]}.downsample.0."),
        (r"^encoder\.stages\.(\d)\.layers\.(\d+)\.shortcut\.normalization\.", lambda m: f"stage{int(m[1]) + 1}.{m[2]}.downsample.1."),
        (r"^encoder\.stages\.(\d)\.layers\.(\d+)\.layer\.(\d)\.convolution\.",
         lambda m: f"stage{int(m[1]) + 1}.{m[2]}.conv{int(m[3]) + 1}."),
        (r"^encoder\.stages\.(\d)\.layers\.(\d+)\.layer\.(\d)\.normalization\.",
         lambda m: f"stage{int(m[1]) + 1}.{m[2]}.bn{int(m[3]) + 1}."),
    ]),
}
_FORMATS = (  # (name, stem key, a key that must sit beside it)
    ("ours", "stem.conv1.weight", "stage1.0.conv1.weight"),
    ("torchvision", "conv1.weight", "layer1.0.conv1.weight"),
    ("huggingface-resnet", "embedder.embedder.convolution.weight", "encoder.stages.0.layers.0.layer.0.convolution.weight"),
)


def convert_resnet_state_dict(state_dict) -> ConvertedWeights:
    """torchvision / timm names (``conv1``, ``bn1``, ``layer1`` ..., ``fc``), Hugging Face ``ResNetConfig`` models
    (``embedder``, ``encoder.stages``), possibly under a prefix such as DETR's ``backbone.0.body.`` or Hugging
    Face's ``model.backbone.conv_encoder.model.``, or ours."""
    keys = list(state_dict)
    for fmt, stem, probe in _FORMATS:
        prefixes = {k[: -len(stem)] for k in keys if k.endswith(stem) and k[: -len(stem)] + probe in state_dict}
        if len(prefixes) > 1:
            raise ValueError(f"the weights hold several ResNets (key prefixes {sorted(prefixes)})")
        if prefixes:
            prefix = prefixes.pop()
            break
    else:
        raise ValueError(f"the weights are not a ResNet state dict (no conv1/layer1 keys); first keys: {keys[:5]}")
    inner, dropped = find_prefix(state_dict, prefix)
    out, origin = {}, {}
    for key, value in inner.items():
        if key.startswith("fc."):
            dropped.append(prefix + key)
            continue
        new = _RULES[fmt](key) if fmt in _RULES else key
        out[new] = value
        origin[new] = prefix + key
    return ConvertedWeights(out, origin, sorted(dropped), fmt, prefix)


@register_backbone("resnet50")
def resnet50(*, out_features=None, out_indices=None, **overrides) -> ResNet:
    """ResNet-50; overrides: num_channels, norm_layer ("bn" | "frozen_bn"), frozen_stages,
    replace_stride_with_dilation, grad_checkpointing (recompute each bottleneck in the backward)."""
    valid = {"num_channels", "norm_layer", "frozen_stages", "replace_stride_with_dilation", "grad_checkpointing"}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise TypeError(f"resnet50: unknown override(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    return ResNet((3, 4, 6, 3), out_features, out_indices, **overrides)
