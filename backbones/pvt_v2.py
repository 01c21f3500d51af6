"""PVTv2 (Wang et al., "PVT v2: Improved Baselines with Pyramid Vision Transformer", 2022) and MiT,
the SegFormer / GLPN encoder (the same network with MLP ratio 4 in every stage).

Tokens stay in ``[B, H*W, C]`` (row-major, i.e. NHWC memory) through every block; the convolutions
(patch embedding, spatial reduction, the Mix-FFN depth-wise conv) see them as channels-last NCHW views,
so no layout copies are made between tokens and images. Stage outputs are ``[B, C, H, W]`` tensors in
channels-last memory.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .base import STAGE_NAMES, Backbone
from .pvt_v2_keys import convert_pvt_v2_state_dict
from .registry import register_backbone


@dataclass(frozen=True)
class PVTv2Config:
    """Every knob of Hugging Face's ``PvtV2Config`` under the same name, plus a few of ours.

    ``layer_norm_eps`` is used by the block and stage norms; ``embed_layer_norm_eps`` by the patch-embedding
    and spatial-reduction norms. The defaults (1e-6 / 1e-5) are those of the original code and timm;
    Hugging Face's PvtV2 uses 1e-6 for both, its Segformer and GLPN 1e-5 for both.
    """

    num_channels: int = 3
    depths: tuple[int, ...] = (2, 2, 2, 2)
    hidden_sizes: tuple[int, ...] = (32, 64, 160, 256)
    num_attention_heads: tuple[int, ...] = (1, 2, 5, 8)
    mlp_ratios: tuple[float, ...] = (8, 8, 4, 4)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    patch_sizes: tuple[int, ...] = (7, 3, 3, 3)
    strides: tuple[int, ...] = (4, 2, 2, 2)
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    drop_path_rate: float = 0.0
    layer_norm_eps: float = 1e-6
    embed_layer_norm_eps: float = 1e-5
    qkv_bias: bool = True
    linear_attention: bool = False
    initializer_range: float = 0.02
    frozen_stages: int = -1
    grad_checkpointing: bool = False

    def __post_init__(self):
        for name in ("depths", "hidden_sizes", "num_attention_heads", "mlp_ratios", "sr_ratios", "patch_sizes", "strides"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 4:
                raise ValueError(f"{name} must be a sequence of 4 values (one per stage), got {value!r}")
            object.__setattr__(self, name, tuple(value))
            if any(v <= 0 for v in value):
                raise ValueError(f"{name} must be positive, got {value!r}")
        for dim, heads in zip(self.hidden_sizes, self.num_attention_heads):
            if dim % heads:
                raise ValueError(f"hidden size {dim} is not a multiple of its {heads} attention heads")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported; choose one of {sorted(_ACTIVATIONS)}")
        if not -1 <= self.frozen_stages <= 4:
            raise ValueError(f"frozen_stages must be in -1..4, got {self.frozen_stages}")
        if self.num_channels < 1:
            raise ValueError(f"num_channels must be >= 1, got {self.num_channels}")

    @classmethod
    def from_overrides(cls, name: str, values: dict) -> "PVTv2Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"{name}: unknown override(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**values)


def _inplace_ok(x: torch.Tensor) -> bool:
    return not (torch.is_grad_enabled() and x.requires_grad)


# name -> (out-of-place, in-place); in-place is used when autograd does not need the input.
_ACTIVATIONS = {
    "gelu": (F.gelu, torch.ops.aten.gelu_),
    "gelu_new": (lambda x: F.gelu(x, approximate="tanh"), lambda x: torch.ops.aten.gelu_(x, approximate="tanh")),
    "gelu_pytorch_tanh": (lambda x: F.gelu(x, approximate="tanh"), lambda x: torch.ops.aten.gelu_(x, approximate="tanh")),
    "relu": (F.relu, F.relu_),
    "silu": (F.silu, lambda x: F.silu(x, inplace=True)),
    "swish": (F.silu, lambda x: F.silu(x, inplace=True)),
}


class Activation(nn.Module):
    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.fn, self.fn_ = _ACTIVATIONS[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn_(x) if _inplace_ok(x) else self.fn(x)

    def extra_repr(self) -> str:
        return self.name


class DropPath(nn.Module):
    """Stochastic depth: drops whole residual branches per sample, scaling survivors by 1/keep."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class OverlapPatchEmbed(nn.Module):
    """Conv (kernel k, stride s, padding k // 2) then LayerNorm: ``[B, C_in, H, W] -> ([B, N, C], H', W')``."""

    def __init__(self, in_channels: int, dim: int, patch_size: int, stride: int, eps: float):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x.contiguous(memory_format=torch.channels_last))
        b, c, h, w = x.shape
        return self.norm(x.permute(0, 2, 3, 1).reshape(b, h * w, c)), h, w


class Attention(nn.Module):
    """Spatial-reduction attention: queries on all N tokens, keys/values on a reduced token set.

    The reduction is a strided ``sr_ratio`` conv + LayerNorm, or (linear variant) a 7x7 adaptive average
    pool + 1x1 conv + LayerNorm + GELU. ``kv`` holds K in its first ``dim`` output rows and V in the rest.
    """

    def __init__(self, dim, num_heads, sr_ratio, linear, qkv_bias, attn_drop, proj_drop, eps):
        super().__init__()
        self.num_heads = num_heads
        self.linear = linear
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.reduces = linear or sr_ratio > 1
        if linear:
            self.pool = nn.AdaptiveAvgPool2d(7)
            self.sr = nn.Conv2d(dim, dim, kernel_size=1)
            self.norm = nn.LayerNorm(dim, eps=eps)
            self.act = nn.GELU()
        elif sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """x: [B, N, C] with N = h * w -> [B, N, C]."""
        b, n, c = x.shape
        head_dim = c // self.num_heads
        q = self.q(x).view(b, n, self.num_heads, head_dim).transpose(1, 2)
        kv_in = x
        if self.reduces:
            kv_in = x.view(b, h, w, c).permute(0, 3, 1, 2)
            if self.linear:
                kv_in = self.pool(kv_in)
            kv_in = self.sr(kv_in)
            kv_in = self.norm(kv_in.permute(0, 2, 3, 1).reshape(b, -1, c))
            if self.linear:
                kv_in = self.act(kv_in)
        k, v = self.kv(kv_in).view(b, -1, 2, self.num_heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        dropout = self.attn_drop if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))


class MixFFN(nn.Module):
    """fc1 -> [ReLU, linear variant] -> 3x3 depth-wise conv -> activation -> fc2 (dropout after both)."""

    def __init__(self, dim, hidden, act, linear, drop):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.relu = linear
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = Activation(act)
        self.drop = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """x: [B, N, C] with N = h * w -> [B, N, C]."""
        b, n, _ = x.shape
        x = self.fc1(x)
        if self.relu:
            x = F.relu_(x) if _inplace_ok(x) else F.relu(x)
        x = self.dwconv(x.view(b, h, w, -1).permute(0, 3, 1, 2))
        x = self.act(x.permute(0, 2, 3, 1).reshape(b, n, -1))
        return self.drop(self.fc2(self.drop(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(Attn(LN(x))), then x + DropPath(MixFFN(LN(x)))."""

    def __init__(self, cfg: PVTv2Config, stage: int, drop_path: float):
        super().__init__()
        dim = cfg.hidden_sizes[stage]
        self.norm1 = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.attn = Attention(
            dim,
            cfg.num_attention_heads[stage],
            cfg.sr_ratios[stage],
            cfg.linear_attention,
            cfg.qkv_bias,
            cfg.attention_probs_dropout_prob,
            cfg.hidden_dropout_prob,
            cfg.embed_layer_norm_eps,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        hidden = int(dim * cfg.mlp_ratios[stage])
        self.mlp = MixFFN(dim, hidden, cfg.hidden_act, cfg.linear_attention, cfg.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class PVTv2Stage(nn.Module):
    """Patch embedding, blocks and the stage LayerNorm: ``[B, C_in, H, W] -> [B, C, H', W']``."""

    def __init__(self, cfg: PVTv2Config, stage: int, drop_paths: Sequence[float]):
        super().__init__()
        in_channels = cfg.num_channels if stage == 0 else cfg.hidden_sizes[stage - 1]
        dim = cfg.hidden_sizes[stage]
        self.patch_embed = OverlapPatchEmbed(
            in_channels, dim, cfg.patch_sizes[stage], cfg.strides[stage], cfg.embed_layer_norm_eps
        )
        self.blocks = nn.ModuleList(Block(cfg, stage, p) for p in drop_paths)
        self.norm = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.grad_checkpointing = cfg.grad_checkpointing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, h, w = self.patch_embed(x)
        use_checkpoint = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, h, w, use_reentrant=False) if use_checkpoint else block(x, h, w)
        x = self.norm(x)
        return x.view(x.shape[0], h, w, -1).permute(0, 3, 1, 2)


def _stage_size(n: int, patch: int, stride: int) -> int:
    return (n + 2 * (patch // 2) - patch) // stride + 1


def _min_input_size(cfg: PVTv2Config) -> int:
    """Smallest side (at least 32, the total stride) for which every spatial-reduction conv has input."""
    for n in range(32, 4097):
        size, ok = n, True
        for patch, stride, sr in zip(cfg.patch_sizes, cfg.strides, cfg.sr_ratios):
            size = _stage_size(size, patch, stride)
            need = 1 if cfg.linear_attention else sr
            ok = ok and size >= need
        if ok:
            return n
    raise ValueError(f"no input size up to 4096 px fits strides {cfg.strides} and sr_ratios {cfg.sr_ratios}")


class PVTv2(Backbone):
    """PVTv2 / MiT backbone. ``forward(x[B, C, H, W]) -> {stage name: Tensor[B, C_i, H_i, W_i]}``.

    The children ``stage1`` ... ``stage4`` run in order, so torchvision's ``IntermediateLayerGetter``
    (inside ``BackboneWithFPN``) can use the module directly.
    """

    def __init__(self, config: PVTv2Config, out_features=None, out_indices=None, name: str = "pvt_v2"):
        super().__init__(out_features, out_indices)
        self.config = config
        self.name = name
        self.num_channels = config.num_channels
        self.min_input_size = _min_input_size(config)
        rates = torch.linspace(0, config.drop_path_rate, sum(config.depths)).tolist()
        stride = 1
        for i, stage_name in enumerate(STAGE_NAMES):
            first = sum(config.depths[:i])
            self.add_module(stage_name, PVTv2Stage(config, i, rates[first : first + config.depths[i]]))
            stride *= config.strides[i]
            self.feature_channels[stage_name] = config.hidden_sizes[i]
            self.feature_strides[stage_name] = stride
        self.apply(self._init_module)
        self.freeze_stages()

    def _init_module(self, m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=self.config.initializer_range)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def freeze_stages(self) -> None:
        for stage_name in STAGE_NAMES[: max(self.config.frozen_stages, 0)]:
            stage = getattr(self, stage_name)
            stage.eval()
            for p in stage.parameters():
                p.requires_grad_(False)

    def convert_state_dict(self, state_dict):
        return convert_pvt_v2_state_dict(state_dict)

    def load_hint(self, state_dict) -> str:
        arch = infer_arch(state_dict)
        if arch is None:
            return ""
        mine = {k: getattr(self.config, k) for k in arch}
        if arch == mine:
            return ""
        diff = "; ".join(f"{k} {arch[k]} in the weights vs {mine[k]} here" for k in arch if arch[k] != mine[k])
        match = _variants_sharing(arch, VARIANT_KEYS[0], _VARIANT_CONFIGS)
        advice = f"these weights fit {' / '.join(match)}" if match else "no registered variant has this architecture"
        return f"the weights come from another architecture ({diff}); {advice}"


PVT_V2_VARIANTS = {
    "pvt_v2_b0": dict(hidden_sizes=(32, 64, 160, 256), depths=(2, 2, 2, 2)),
    "pvt_v2_b1": dict(hidden_sizes=(64, 128, 320, 512), depths=(2, 2, 2, 2)),
    "pvt_v2_b2": dict(hidden_sizes=(64, 128, 320, 512), depths=(3, 4, 6, 3)),
    "pvt_v2_b2_li": dict(hidden_sizes=(64, 128, 320, 512), depths=(3, 4, 6, 3), linear_attention=True),
    "pvt_v2_b3": dict(hidden_sizes=(64, 128, 320, 512), depths=(3, 4, 18, 3)),
    "pvt_v2_b4": dict(hidden_sizes=(64, 128, 320, 512), depths=(3, 8, 27, 3)),
    "pvt_v2_b5": dict(hidden_sizes=(64, 128, 320, 512), depths=(3, 6, 40, 3), mlp_ratios=(4, 4, 4, 4)),
}
# MiT (SegFormer / GLPN encoders): PVTv2 sizes with MLP ratio 4 everywhere.
MIT_VARIANTS = {
    f"mit_b{i}": dict(PVT_V2_VARIANTS[f"pvt_v2_b{i}"], mlp_ratios=(4, 4, 4, 4)) for i in range(6)
}


def _register(name: str, arch: dict) -> None:
    @register_backbone(name)
    def build(*, out_features=None, out_indices=None, **overrides) -> PVTv2:
        return PVTv2(PVTv2Config.from_overrides(name, {**arch, **overrides}), out_features, out_indices, name=name)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"{name}: " + ", ".join(f"{k}={v}" for k, v in arch.items())


for _name, _arch in {**PVT_V2_VARIANTS, **MIT_VARIANTS}.items():
    _register(_name, _arch)


# The registered variants as full configs, and the fields that tell them apart, most telling first.
_VARIANT_CONFIGS = {n: dataclasses.asdict(PVTv2Config(**a)) for n, a in {**PVT_V2_VARIANTS, **MIT_VARIANTS}.items()}
VARIANT_KEYS = (
    ("hidden_sizes", "depths", "mlp_ratios", "linear_attention"),
    ("hidden_sizes", "depths"),
    ("hidden_sizes", "mlp_ratios", "linear_attention"),
)


def variant_for(arch: Mapping, family: Mapping[str, dict] | None = None) -> tuple[str, dict]:
    """``(registered variant, overrides)`` that build ``arch`` (``PVTv2Config`` fields; lists read as tuples):
    the first variant of ``family`` (default: every PVTv2 and MiT variant) sharing the first of ``VARIANT_KEYS``
    that any shares (a field ``arch`` lacks matches), else the family's first; the overrides are where ``arch``
    differs from that variant's config."""
    arch = {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()}
    names = list(family or _VARIANT_CONFIGS)
    fits = [n for keys in VARIANT_KEYS for n in _variants_sharing(arch, keys, names)]
    name = (fits or names)[0]
    return name, {k: v for k, v in arch.items() if _VARIANT_CONFIGS[name][k] != v}


def _variants_sharing(arch: Mapping, keys: Sequence[str], names) -> list[str]:
    return [n for n in names if all(_VARIANT_CONFIGS[n][k] == arch.get(k, _VARIANT_CONFIGS[n][k]) for k in keys)]


def infer_arch(sd: Mapping) -> dict | None:
    """The ``VARIANT_KEYS[0]`` fields of the network a state dict in our keys was made for, read from its weight
    shapes, or None if it is incomplete."""
    try:
        arch = dict(hidden_sizes=[], depths=[], mlp_ratios=[])
        for i in range(1, 5):
            fc1 = sd[f"stage{i}.blocks.0.mlp.fc1.weight"]
            arch["hidden_sizes"].append(fc1.shape[1])
            arch["mlp_ratios"].append(fc1.shape[0] // fc1.shape[1])
            arch["depths"].append(len({k.split(".")[2] for k in sd if k.startswith(f"stage{i}.blocks.")}))
        arch = {k: tuple(v) for k, v in arch.items()}
        arch["linear_attention"] = "stage4.blocks.0.attn.sr.weight" in sd
        return arch
    except KeyError:
        return None
