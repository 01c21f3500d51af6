"""Panoptic SegFormer (Li et al., CVPR 2022): Deformable DETR's encoder and location decoder, then a mask
decoder whose masks are the cross-attention maps of its queries over the first three feature levels.

Shapes: B images, Q location queries, N thing queries given to the mask decoder, S stuff classes (one query
each), C = hidden_dim, h = attention heads, (H1, W1) the stride-8 level. Masks are ReLU outputs (trained with
dice, thresholded at 0.5), never sigmoided. Padding masks are True on padding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .deformable_detr import DeformableDETRConfig, DeformableDETRHead, check_architecture

MASK_LEVELS = 3  # the mask decoder reads the stride 8, 16 and 32 levels; the stride-64 tokens are dropped


@dataclass
class PanopticSegFormerConfig:
    """Panoptic SegFormer's hyper-parameters, declared once (as ``backbones.PVTv2Config`` is for the backbone):
    the head is built from it; ``tasks.panoptic.PanopticSegFormer`` takes its fields as keyword arguments and
    stores them in its checkpoint's config; the config section (``tasks.panoptic.presets.PanopticSegFormerModel``)
    extends it. A new hyper-parameter is a field here, read by the head.

    The location decoder is Deformable DETR's with 4 levels, box refinement and one stage (``detr()``); the thing
    mask decoder has ``thing_mask_layers`` layers, the stuff one ``stuff_mask_layers``. Not frozen: the config
    section that extends it is edited by ``--cfg-options``.
    """

    num_things_classes: int = 80
    num_stuff_classes: int = 53
    num_queries: int = 300
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 1024
    dropout: float = 0.1
    n_points: int = 4
    thing_mask_layers: int = 4
    stuff_mask_layers: int = 6

    def __post_init__(self):
        check_architecture(self, PanopticSegFormerConfig)

    def detr(self) -> DeformableDETRConfig:
        """The location decoder's configuration: thing classes only, 4 levels, box refinement."""
        return DeformableDETRConfig(
            num_classes=self.num_things_classes, num_queries=self.num_queries, num_feature_levels=4,
            hidden_dim=self.hidden_dim, nheads=self.nheads, enc_layers=self.enc_layers, dec_layers=self.dec_layers,
            dim_feedforward=self.dim_feedforward, dropout=self.dropout, n_points=self.n_points, with_box_refine=True,
        )


class MaskAttention(nn.Module):
    """Cross-attention that also turns its per-head logits into a mask.

    ``forward(query[B, N, C], key[B, L, C], value[B, L, C] | None, shapes, key_padding_mask[B, L] | None)
    -> (out[B, N, C] | None, mask[B, N, H1, W1])``. The logits ``A = q kᵀ / sqrt(C / h)`` of each level go
    through ``linear_l{1,2,3}`` (Linear(h, h) + ReLU over the heads); levels 2 and 3 are bilinearly resized to
    level 1; ``linear`` (Linear(3h, 1) + ReLU) fuses them into the mask. The value path (absent with
    ``with_value=False``, the decoder's last "tail" layer) is softmax attention over all tokens of the three
    levels; padded tokens get no weight (the authors' code ignores the mask: the same at batch 1).
    """

    def __init__(self, dim: int, num_heads: int, with_value: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        if with_value:
            self.v = nn.Linear(dim, dim)
            self.proj = nn.Linear(dim, dim)
        self.linear_l1 = nn.Sequential(nn.Linear(num_heads, num_heads), nn.ReLU())
        self.linear_l2 = nn.Sequential(nn.Linear(num_heads, num_heads), nn.ReLU())
        self.linear_l3 = nn.Sequential(nn.Linear(num_heads, num_heads), nn.ReLU())
        self.linear = nn.Sequential(nn.Linear(3 * num_heads, 1), nn.ReLU())

    def forward(self, query, key, value, shapes, key_padding_mask=None):
        B, N, C = query.shape
        h = self.num_heads
        q = self.q(query).view(B, N, h, C // h).transpose(1, 2)
        k = self.k(key).view(B, -1, h, C // h).transpose(1, 2)
        logits = (q @ k.transpose(-2, -1)) * self.scale  # [B, h, N, L]
        mask = self._mask(logits.permute(0, 2, 3, 1), shapes)
        if value is None:
            return None, mask
        if key_padding_mask is not None:
            logits = logits.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        v = self.v(value).view(B, -1, h, C // h).transpose(1, 2)
        out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(out), mask

    def _mask(self, logits: torch.Tensor, shapes) -> torch.Tensor:
        """``logits[B, N, L, h]`` -> ``mask[B, N, H1, W1]``."""
        B, N, _, h = logits.shape
        (h1, w1), (h2, w2), (h3, w3) = shapes
        l1, l2, l3 = logits.split([h1 * w1, h2 * w2, h3 * w3], dim=2)
        maps = [self.linear_l1(l1)]
        for x, linear, (hh, ww) in ((l2, self.linear_l2, (h2, w2)), (l3, self.linear_l3, (h3, w3))):
            x = linear(x).permute(0, 1, 3, 2).reshape(B * N, h, hh, ww)
            x = F.interpolate(x, size=(h1, w1), mode="bilinear", align_corners=False)
            maps.append(x.reshape(B, N, h, h1 * w1).permute(0, 1, 3, 2))
        return self.linear(torch.cat(maps, -1)).view(B, N, h1, w1)


class MaskDecoderLayer(nn.Module):
    """[self-attention, norm3 (stuff only)] -> mask cross-attention, head_norm1 -> MLP (GELU), head_norm2;
    post-norm, LayerNorm eps 1e-6, no dropout."""

    def __init__(self, dim: int, num_heads: int, self_attn: bool, mlp_ratio: int = 4):
        super().__init__()
        if self_attn:
            self.self_attention = nn.MultiheadAttention(dim, num_heads, batch_first=True)
            self.norm3 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MaskAttention(dim, num_heads)
        self.head_norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential()
        self.mlp.add_module("fc1", nn.Linear(dim, dim * mlp_ratio))
        self.mlp.add_module("act", nn.GELU())
        self.mlp.add_module("fc2", nn.Linear(dim * mlp_ratio, dim))
        self.head_norm2 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, query, memory, shapes, padding_mask):
        if hasattr(self, "self_attention"):
            query = self.norm3(query + self.self_attention(query, query, query, need_weights=False)[0])
        x, mask = self.attn(query, memory, memory, shapes, padding_mask)
        query = self.head_norm1(query + x)
        return self.head_norm2(query + self.mlp(query)), mask


class MaskDecoder(nn.Module):
    """``forward(query[B, N, C], query_pos[B, N, C] | None, memory[B, L, C], shapes, padding_mask[B, L])
    -> (masks, queries)``: ``masks`` holds one ``[B, N, H1, W1]`` per layer and, last, the tail's (the final
    mask); ``queries`` one ``[B, N, C]`` per layer. The position is added to the query before every layer (the
    authors' order); the memory carries no position."""

    def __init__(self, dim: int, num_heads: int, num_layers: int, self_attn: bool):
        super().__init__()
        self.blocks = nn.ModuleList(MaskDecoderLayer(dim, num_heads, self_attn) for _ in range(num_layers))
        self.attnen = MaskAttention(dim, num_heads, with_value=False)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, query, query_pos, memory, shapes, padding_mask):
        masks, queries = [], []
        for block in self.blocks:
            query, mask = block(query if query_pos is None else query + query_pos, memory, shapes, padding_mask)
            masks.append(mask)
            queries.append(query)
        masks.append(self.attnen(query if query_pos is None else query + query_pos, memory, None, shapes)[1])
        return masks, queries


class PanopticSegFormerHead(nn.Module):
    """Everything of Panoptic SegFormer after the backbone: ``head(head.project(features), padding_masks,
    select=None) -> dict``; ``config`` is a ``PanopticSegFormerConfig`` (None: its defaults).

    ``detr`` is Deformable DETR's head (4 levels, box refinement, 2-d reference points, thing classes only);
    its outputs (``pred_logits[B, Q, T]``, ``pred_boxes[B, Q, 4]``, ``aux_outputs``) are passed through. Then:

    - thing masks: the last location-decoder outputs (no query position) of the queries ``select(outputs)``
      returns (given the location decoder's outputs above; a list of B index tensors; None: all Q) go through
      ``things_mask_head``:
      ``thing_index[B, N]`` (query per row, -1 on padding rows), ``thing_masks[B, N, H1, W1]`` (final) and
      ``thing_aux_masks`` (one per layer);
    - stuff: one query per stuff class (``stuff_query``: [query | position]) through ``stuff_mask_head``:
      ``stuff_masks[B, S, H1, W1]``, ``stuff_aux_masks`` (one per layer), ``stuff_logits[B, S]`` (presence,
      sigmoid; from the last layer) and ``stuff_aux_logits`` (the other layers).

    The thing decoder has no self-attention, so a query's mask does not depend on which others are decoded.
    """

    def __init__(self, in_channels: Sequence[int], config: PanopticSegFormerConfig | None = None):
        super().__init__()
        config = PanopticSegFormerConfig() if config is None else config
        if not isinstance(config, PanopticSegFormerConfig):
            raise TypeError(f"PanopticSegFormerHead: config must be a PanopticSegFormerConfig, got {type(config).__name__}")
        if len(in_channels) != 3:
            raise ValueError(f"PanopticSegFormerHead: expects 3 backbone maps (strides 8/16/32), got {len(in_channels)}")
        self.config = config
        hidden_dim, nheads, num_stuff_classes = config.hidden_dim, config.nheads, config.num_stuff_classes
        thing_mask_layers, stuff_mask_layers = config.thing_mask_layers, config.stuff_mask_layers
        self.num_stuff_classes, self.hidden_dim = num_stuff_classes, hidden_dim
        self.detr = DeformableDETRHead(in_channels, config.detr(), input_proj_bias=False)
        self.stuff_query = nn.Embedding(num_stuff_classes, 2 * hidden_dim)
        self.things_mask_head = MaskDecoder(hidden_dim, nheads, thing_mask_layers, self_attn=False)
        self.stuff_mask_head = MaskDecoder(hidden_dim, nheads, stuff_mask_layers, self_attn=True)
        self.cls_stuff_branches = nn.ModuleList(nn.Linear(hidden_dim, 1) for _ in range(stuff_mask_layers))
        prior = -math.log((1 - 0.01) / 0.01)
        for cls in self.cls_stuff_branches:
            nn.init.constant_(cls.bias, prior)

    def project(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return self.detr.project(features)

    def forward(self, sources, padding_masks, select: Callable | None = None) -> dict:
        out = self.detr(sources, padding_masks, return_state=True)
        state = out.pop("state")
        shapes = state["spatial_shapes"][:MASK_LEVELS]
        tokens = sum(h * w for h, w in shapes)
        memory, padding = state["memory"][:, :tokens], state["padding_mask"][:, :tokens]
        queries = state["queries"]
        B, Q, C = queries.shape
        if select is None:
            index = torch.arange(Q, device=queries.device).expand(B, Q)
        else:
            chosen = [torch.as_tensor(i, dtype=torch.long, device=queries.device) for i in select(out)]
            index = torch.full((B, max([len(i) for i in chosen] + [0])), -1, dtype=torch.long, device=queries.device)
            for b, i in enumerate(chosen):
                index[b, : len(i)] = i
        thing_query = queries.gather(1, index.clamp(min=0)[..., None].expand(-1, -1, C)) * (index >= 0)[..., None]
        thing_masks, _ = self.things_mask_head(thing_query, None, memory, shapes, padding)
        stuff_query, stuff_pos = self.stuff_query.weight.expand(B, -1, -1).chunk(2, dim=-1)
        stuff_masks, stuff_queries = self.stuff_mask_head(stuff_query, stuff_pos, memory, shapes, padding)
        stuff_logits = [cls(q)[..., 0] for cls, q in zip(self.cls_stuff_branches, stuff_queries)]
        out.update(
            thing_index=index, thing_masks=thing_masks[-1], thing_aux_masks=thing_masks[:-1],
            stuff_masks=stuff_masks[-1], stuff_aux_masks=stuff_masks[:-1],
            stuff_logits=stuff_logits[-1], stuff_aux_logits=stuff_logits[:-1],
        )
        return out
