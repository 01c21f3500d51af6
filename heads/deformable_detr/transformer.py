"""Deformable DETR's transformer: deformable encoder, decoder with reference points, and the detection head.

Shapes: B images, L levels, S = sum of H_l * W_l tokens, Q queries, C = hidden_dim, K classes.
Padding masks are True on padding (the original's convention; Hugging Face's ``pixel_mask`` is the inverse).
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..precision import float32
from ..recompute import recompute
from .ms_deform_attn import MSDeformAttn
from .position_encoding import PositionEmbeddingSine, box_sine_embedding


@dataclass
class DeformableDETRConfig:
    """Deformable DETR's hyper-parameters, declared once (as ``backbones.PVTv2Config`` is for the backbone): the
    head is built from it; ``tasks.detection.DeformableDETR`` takes its fields as keyword arguments and stores them
    in its checkpoint's config; the config section (``tasks.detection.presets.DeformableDETRModel``) extends it.
    A new hyper-parameter is a field here, read by the head.

    ``num_classes``: sigmoid classes (COCO: the raw category ids, max id 90 + 1). ``num_feature_levels``: the
    backbone maps read plus the stride-2 levels added after them. ``two_stage`` needs ``with_box_refine`` (as in
    Hugging Face's config). Not frozen: the config section that extends it is edited by ``--cfg-options``.
    """

    num_classes: int = 91
    num_queries: int = 300
    num_feature_levels: int = 4
    hidden_dim: int = 256
    nheads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    dim_feedforward: int = 1024
    dropout: float = 0.1
    n_points: int = 4
    with_box_refine: bool = False
    two_stage: bool = False

    def __post_init__(self):
        check_architecture(self, DeformableDETRConfig)
        if self.two_stage and not self.with_box_refine:
            raise ValueError("two_stage=True needs with_box_refine=True (as in Hugging Face's config)")


def check_architecture(config, fields_of: type) -> None:
    """The ``fields_of`` fields of ``config`` (a head's hyper-parameters dataclass): int fields positive ints,
    bool fields bools, ``dropout`` a probability; else a ValueError naming the field, the value and the rule."""
    who = type(config).__name__
    for f in dataclasses.fields(fields_of):
        value = getattr(config, f.name)
        if f.type in (bool, "bool") and not isinstance(value, bool):
            raise ValueError(f"{who}: {f.name} must be True or False, got {value!r}")
        if f.type in (int, "int") and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{who}: {f.name} must be an int >= 1, got {value!r}")
        if f.type in (float, "float") and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1):
            raise ValueError(f"{who}: {f.name} must be a probability in [0, 1), got {value!r}")


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def valid_ratios(padding_mask: torch.Tensor) -> torch.Tensor:
    """``padding_mask[B, H, W]`` -> ``Tensor[B, 2]``: the real fraction of the map, ordered (w, h)."""
    not_mask = ~padding_mask
    h = not_mask[:, :, 0].sum(1).float() / padding_mask.shape[1]
    w = not_mask[:, 0, :].sum(1).float() / padding_mask.shape[2]
    return torch.stack([w, h], -1)


class MLP(nn.Module):
    """``num_layers`` linears with ReLU between them (the box head); keys ``layers.{i}``."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, dims[1:] + [output_dim]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class _FFN(nn.Module):
    """Post-norm feed-forward block: ``norm(x + dropout(linear2(dropout(relu(linear1(x))))))``."""

    def __init__(self, d_model: int, d_ffn: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x))))))


class DeformableEncoderLayer(nn.Module):
    """Deformable self-attention (queries carry the position embedding, values do not), then the FFN."""

    def __init__(self, d_model: int, d_ffn: int, dropout: float, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout = nn.Dropout(dropout)
        self.self_attn_norm = nn.LayerNorm(d_model)
        self.ffn = _FFN(d_model, d_ffn, dropout)

    def forward(self, src, pos, reference_points, spatial_shapes, padding_mask):
        """``src``, ``pos``: [B, S, C]; ``reference_points``: [B, S, L, 2]; ``padding_mask``: [B, S]."""
        attn = self.self_attn(src + pos, reference_points, src, spatial_shapes, padding_mask)
        return self.ffn(self.self_attn_norm(src + self.dropout(attn)))


class DeformableDecoderLayer(nn.Module):
    """Query self-attention, deformable cross-attention into the memory, FFN; each post-norm."""

    def __init__(self, d_model: int, d_ffn: int, dropout: float, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.self_attn_norm = nn.LayerNorm(d_model)
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.cross_attn_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.ffn = _FFN(d_model, d_ffn, dropout)

    def forward(self, tgt, query_pos, reference_points, memory, spatial_shapes, memory_padding_mask):
        """``tgt``, ``query_pos``: [B, Q, C]; ``reference_points``: [B, Q, L, 2 | 4]; ``memory``: [B, S, C]."""
        q = k = tgt + query_pos
        tgt = self.self_attn_norm(tgt + self.dropout(self.self_attn(q, k, tgt, need_weights=False)[0]))
        attn = self.cross_attn(tgt + query_pos, reference_points, memory, spatial_shapes, memory_padding_mask)
        tgt = self.cross_attn_norm(tgt + self.dropout(attn))
        return self.ffn(tgt)


class DeformableEncoder(nn.Module):
    def __init__(self, layer: DeformableEncoderLayer, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.grad_checkpointing = False  # recompute each layer's activations (all tokens x levels) in the backward

    @staticmethod
    def reference_points(spatial_shapes: Sequence[tuple[int, int]], ratios: torch.Tensor) -> torch.Tensor:
        """Pixel centres of every level, normalised to the real region, then seen from every level:
        ``ratios[B, L, 2]`` -> ``Tensor[B, S, L, 2]`` (x, y)."""
        points = []
        for level, (h, w) in enumerate(spatial_shapes):
            # arange + 0.5, not linspace: the same numbers, and a traced linspace fixes its length
            y, x = torch.meshgrid(
                torch.arange(h, dtype=ratios.dtype, device=ratios.device) + 0.5,
                torch.arange(w, dtype=ratios.dtype, device=ratios.device) + 0.5,
                indexing="ij",
            )
            y = y.reshape(-1)[None] / (ratios[:, None, level, 1] * h)
            x = x.reshape(-1)[None] / (ratios[:, None, level, 0] * w)
            points.append(torch.stack((x, y), -1))
        return torch.cat(points, 1)[:, :, None] * ratios[:, None]

    def forward(self, src, pos, spatial_shapes, ratios, padding_mask):
        """``src``, ``pos``: [B, S, C]; ``ratios``: [B, L, 2]; ``padding_mask``: [B, S] -> memory [B, S, C]."""
        reference_points = self.reference_points(spatial_shapes, ratios)
        use_checkpoint = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for layer in self.layers:
            if use_checkpoint:
                src = recompute(layer, layer, src, pos, reference_points, spatial_shapes, padding_mask)
            else:
                src = layer(src, pos, reference_points, spatial_shapes, padding_mask)
        return src


class DeformableDecoder(nn.Module):
    def __init__(self, layer: DeformableDecoderLayer, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    def forward(
        self, tgt, query_pos, reference_points, memory, spatial_shapes, ratios, memory_padding_mask, bbox_embed=None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run every layer; returns ``(hs[N, B, Q, C], references)``, N tensors ``[B, Q, 2 | 4]``.

        ``reference_points[B, Q, 2 | 4]`` are normalised to the real image region. ``references[i]`` is what
        layer i used (points become boxes after the first refinement). With ``bbox_embed`` (one box MLP per
        layer: iterative refinement) each layer's box prediction, detached, becomes the next layer's reference.
        """
        hs, references = [], []
        for i, layer in enumerate(self.layers):
            scale = ratios if reference_points.shape[-1] == 2 else torch.cat([ratios, ratios], -1)
            ref_input = reference_points[:, :, None] * scale[:, None]  # [B, Q, L, 2 | 4], on the padded maps
            tgt = layer(tgt, query_pos, ref_input, memory, spatial_shapes, memory_padding_mask)
            hs.append(tgt)
            references.append(reference_points)
            if bbox_embed is not None:
                reference_points = refine_boxes(bbox_embed[i](tgt), reference_points).detach()
        return torch.stack(hs), references


def refine_boxes(delta: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``sigmoid(delta + inverse_sigmoid(reference))``: ``delta[..., 4]`` logits, ``reference[..., 2 | 4]``;
    a point reference only offsets the centre. Float32 under autocast: boxes are chained through the decoder
    layers and end in pixels, where bf16's 8-bit mantissa is a step of 2-4 px at 500-1000 px."""
    ref = inverse_sigmoid(float32(reference))
    if reference.shape[-1] == 2:
        ref = F.pad(ref, (0, 2))
    return (float32(delta) + ref).sigmoid()


class DeformableDETRHead(nn.Module):
    """Everything of Deformable DETR after the backbone.

    ``in_channels``: channels of the backbone maps it reads (3 maps at strides 8/16/32 for multi-scale, or 1).
    Levels beyond those (``num_feature_levels - len(in_channels)``) come from a stride-2 3x3 conv, the first
    on the raw last backbone map. Use as ``head(head.project(features), padding_masks)``:

    - ``project(features: Sequence[Tensor[B, C_l, H_l, W_l]]) -> list[Tensor[B, hidden_dim, H_l, W_l]]``
      (``input_proj``; its GroupNorm pools over the whole map, so call it on unpadded maps only);
    - ``forward(sources, padding_masks: Sequence[Tensor[B, H_l, W_l]] bool, True = padding) -> dict`` with
      ``pred_logits[B, Q, K]``, ``pred_boxes[B, Q, 4]`` (cx, cy, w, h) in [0, 1] of the real region,
      ``aux_outputs`` (the same for decoder layers 0 .. N-2, for the auxiliary losses) and, for two-stage,
      ``enc_outputs`` (``pred_logits[B, S, K]``, ``pred_boxes[B, S, 4]``: the encoder proposals the
      two-stage loss matches against class-agnostic targets); with ``return_state=True`` also ``state``:
      ``memory[B, S, C]``, its ``padding_mask[B, S]``, ``spatial_shapes`` and the last decoder layer's
      ``queries[B, Q, C]``.

    Everything in ``forward`` respects the masks exactly: padded tokens are zeroed as values and never
    selected as proposals, so an image's outputs do not depend on how far it is padded.
    ``config``: the hyper-parameters (``DeformableDETRConfig``; None: its defaults). ``input_proj_bias=False``
    drops the biases of the projection convs (mmdet's ``ChannelMapper``, which Panoptic SegFormer uses: each conv
    is followed by GroupNorm).
    Without box refinement one class/box head is shared by all decoder layers (the original repeats the
    same module); with it each layer has its own and the decoder receives them explicitly.
    """

    def __init__(
        self, in_channels: Sequence[int], config: DeformableDETRConfig | None = None, *, input_proj_bias: bool = True
    ):
        super().__init__()
        config = DeformableDETRConfig() if config is None else config
        if not isinstance(config, DeformableDETRConfig):
            raise TypeError(f"DeformableDETRHead: config must be a DeformableDETRConfig, got {type(config).__name__}")
        self.config = config
        num_classes, num_queries, num_feature_levels = config.num_classes, config.num_queries, config.num_feature_levels
        hidden_dim, nheads, n_points, dropout = config.hidden_dim, config.nheads, config.n_points, config.dropout
        with_box_refine, two_stage, dec_layers = config.with_box_refine, config.two_stage, config.dec_layers
        in_channels = list(in_channels)
        if num_feature_levels < len(in_channels):
            raise ValueError(f"num_feature_levels={num_feature_levels} < the {len(in_channels)} backbone maps given")
        self.num_queries, self.num_feature_levels = num_queries, num_feature_levels
        self.num_backbone_levels = len(in_channels)
        self.with_box_refine, self.two_stage = with_box_refine, two_stage
        bias = input_proj_bias  # mmdet's ChannelMapper (Panoptic SegFormer) has none: GroupNorm follows
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, hidden_dim, kernel_size=1, bias=bias), nn.GroupNorm(32, hidden_dim))
            for c in in_channels
        )
        c = in_channels[-1]
        for _ in range(num_feature_levels - len(in_channels)):
            self.input_proj.append(
                nn.Sequential(nn.Conv2d(c, hidden_dim, 3, stride=2, padding=1, bias=bias), nn.GroupNorm(32, hidden_dim))
            )
            c = hidden_dim
        self.position_embedding = PositionEmbeddingSine(hidden_dim // 2, offset=-0.5)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, hidden_dim))
        args = (hidden_dim, config.dim_feedforward, dropout, num_feature_levels, nheads, n_points)
        self.encoder = DeformableEncoder(DeformableEncoderLayer(*args), config.enc_layers)
        self.decoder = DeformableDecoder(DeformableDecoderLayer(*args), dec_layers)
        if two_stage:
            self.enc_output = nn.Linear(hidden_dim, hidden_dim)
            self.enc_output_norm = nn.LayerNorm(hidden_dim)
            self.pos_trans = nn.Linear(2 * hidden_dim, 2 * hidden_dim)
            self.pos_trans_norm = nn.LayerNorm(2 * hidden_dim)
        else:
            self.query_embed = nn.Embedding(num_queries, 2 * hidden_dim)  # [query_pos | tgt]
            self.reference_points = nn.Linear(hidden_dim, 2)
        num_heads = (dec_layers + two_stage) if with_box_refine else 1
        self.class_embed = nn.ModuleList(nn.Linear(hidden_dim, num_classes) for _ in range(num_heads))
        self.bbox_embed = nn.ModuleList(MLP(hidden_dim, hidden_dim, 4, 3) for _ in range(num_heads))
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """The original's init: xavier on the transformer's matrices, then the layer-specific inits."""
        transformer = [self.encoder, self.decoder] + ([self.enc_output, self.pos_trans] if self.two_stage else [])
        for module in transformer:
            for p in module.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        if not self.two_stage:
            nn.init.xavier_uniform_(self.reference_points.weight)
            nn.init.zeros_(self.reference_points.bias)
        nn.init.normal_(self.level_embed)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight)
            if proj[0].bias is not None:
                nn.init.zeros_(proj[0].bias)
        prior = -math.log((1 - 0.01) / 0.01)
        for cls in self.class_embed:
            nn.init.constant_(cls.bias, prior)
        for i, box in enumerate(self.bbox_embed):
            nn.init.zeros_(box.layers[-1].weight)
            nn.init.zeros_(box.layers[-1].bias)
            if i == 0 and not self.two_stage:  # boxes start small (sigmoid(-2) ~ 0.12 of the image)
                nn.init.constant_(box.layers[-1].bias[2:], -2.0)

    def project(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != self.num_backbone_levels:
            raise ValueError(
                f"DeformableDETRHead.project: expected {self.num_backbone_levels} feature maps, got {len(features)}"
            )
        sources = [proj(x) for proj, x in zip(self.input_proj, features)]
        x = features[-1]
        for proj in self.input_proj[len(features) :]:
            x = proj(x)
            sources.append(x)
        return sources

    def forward(
        self, sources: Sequence[torch.Tensor], padding_masks: Sequence[torch.Tensor], return_state: bool = False
    ) -> dict:
        spatial_shapes = [tuple(s.shape[-2:]) for s in sources]
        pos = [
            (self.position_embedding(m).to(s.dtype) + e[None, :, None, None]).flatten(2).transpose(1, 2)
            for s, m, e in zip(sources, padding_masks, self.level_embed)
        ]
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in sources], 1)  # [B, S, C]
        mask = torch.cat([m.flatten(1) for m in padding_masks], 1)  # [B, S]
        ratios = torch.stack([valid_ratios(m) for m in padding_masks], 1).to(src.dtype)  # [B, L, 2]
        memory = self.encoder(src, torch.cat(pos, 1), spatial_shapes, ratios, mask)

        out = {}
        if self.two_stage:
            query_pos, tgt, reference_points, out["enc_outputs"] = self._proposal_queries(memory, mask, spatial_shapes)
        else:
            query_pos, tgt = self.query_embed.weight.expand(src.shape[0], -1, -1).chunk(2, dim=-1)
            reference_points = float32(self.reference_points(query_pos)).sigmoid()  # float32: see refine_boxes
        bbox_embed = self.bbox_embed if self.with_box_refine else None
        hs, references = self.decoder(
            tgt, query_pos, reference_points, memory, spatial_shapes, ratios, mask, bbox_embed
        )

        layers = []
        for i, (h, ref) in enumerate(zip(hs, references)):
            k = i if self.with_box_refine else 0
            boxes = refine_boxes(self.bbox_embed[k](h), ref)
            layers.append({"pred_logits": float32(self.class_embed[k](h)), "pred_boxes": boxes})  # fp32 under autocast
        out.update(layers[-1], aux_outputs=layers[:-1])
        if return_state:  # for heads built on this one (Panoptic SegFormer's mask decoder)
            out["state"] = {"memory": memory, "padding_mask": mask, "spatial_shapes": spatial_shapes, "queries": hs[-1]}
        return out

    def _proposal_queries(self, memory, mask, spatial_shapes):
        """Two-stage: every real token proposes a box; the ``num_queries`` best (class 0 score) become the
        decoder's queries (position from the box's sine embedding) and reference boxes (detached)."""
        # Eager only: the count is data, which a traced graph cannot branch on (topk still fails there).
        fewest = self.num_queries if torch.compiler.is_compiling() else int((~mask).sum(1).min())
        if fewest < self.num_queries:
            raise ValueError(
                f"two-stage: an image has {fewest} feature tokens, fewer than num_queries={self.num_queries}; "
                "use larger images or fewer queries"
            )
        proposals, valid = _token_proposals(mask, spatial_shapes)
        memory = memory.masked_fill(mask[..., None] | ~valid, 0.0)
        memory = self.enc_output_norm(self.enc_output(memory))
        enc_logits = self.class_embed[-1](memory)  # [B, S, K]
        enc_coords = self.bbox_embed[-1](memory) + proposals  # logits; +inf on padded / invalid proposals
        # Padded tokens must never win (the original ranks them too, so its choice depends on the padding).
        scores = enc_logits[..., 0].masked_fill(mask, float("-inf"))
        top = scores.topk(self.num_queries, dim=1).indices
        reference_points = enc_coords.gather(1, top[..., None].expand(-1, -1, 4)).detach().sigmoid()
        # hidden_dim / 2 features per box coordinate (Hugging Face's rule; the original's fixed 128 is the same at 256)
        embedding = box_sine_embedding(reference_points, num_feats=self.pos_trans.in_features // 4)
        query_pos, tgt = self.pos_trans_norm(self.pos_trans(embedding)).chunk(2, dim=-1)
        return query_pos, tgt, reference_points, {"pred_logits": float32(enc_logits), "pred_boxes": float32(enc_coords).sigmoid()}


def _token_proposals(mask: torch.Tensor, spatial_shapes) -> tuple[torch.Tensor, torch.Tensor]:
    """One box per token: its cell centre in the real region, side 0.05 * 2^level.

    ``mask[B, S]`` -> ``(logits[B, S, 4], valid[B, S, 1])``; logits are +inf where a token is padding or
    its box is not inside (0.01, 0.99).
    """
    boxes, start = [], 0
    for level, (h, w) in enumerate(spatial_shapes):
        m = mask[:, start : start + h * w].view(-1, h, w)
        start += h * w
        real_wh = torch.stack([(~m[:, 0, :]).sum(1), (~m[:, :, 0]).sum(1)], -1).float()  # [B, 2]
        y, x = torch.meshgrid(
            torch.arange(h, dtype=torch.float32, device=mask.device),
            torch.arange(w, dtype=torch.float32, device=mask.device),
            indexing="ij",
        )
        centres = (torch.stack([x, y], -1).view(1, -1, 2) + 0.5) / real_wh[:, None, :]
        boxes.append(torch.cat([centres, torch.full_like(centres, 0.05 * 2.0**level)], -1))
    boxes = torch.cat(boxes, 1)
    valid = ((boxes > 0.01) & (boxes < 0.99)).all(-1, keepdim=True)
    logits = torch.log(boxes / (1 - boxes)).masked_fill(mask[..., None] | ~valid, float("inf"))
    return logits, valid
