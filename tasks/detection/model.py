"""Deformable DETR on a registered backbone (stage2-4, or stage4 for single-scale), and its weight loading.

Batch invariance: the backbone and ``input_proj`` (convolutions with zero padding, GroupNorm statistics
over the whole map) see padding, so a padded image would not give the features it gives alone. The model
therefore runs them on each group of same-sized images without padding, then pads the projected maps into
one batch with exact per-level masks; the transformer is exactly mask-respecting from there on. A batch of
same-sized images (or no ``pixel_mask``) is a single group: one backbone pass, as usual.

``DeformableDETR.from_pretrained`` reads our checkpoints and Hugging Face ``DeformableDetrForObjectDetection``
folders (transformers 4.x names, as 5.x also writes, and the 5.x in-memory names).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from backbones import build_backbone
from backbones.weights import ConvertedWeights
from heads.deformable_detr import DeformableDETRHead
from heads.deformable_detr.ms_deform_attn import MSDeformAttn
from tasks.common.checkpoint import load_strict, read_config_json, read_pretrained

_RESERVED_BACKBONE_ARGS = ("out_features", "out_indices", "weights")
# The published checkpoints' backbone: torchvision ResNet-50, frozen BN, stem and layer1 not trained.
_DEFAULT_BACKBONE_ARGS = {"resnet50": {"norm_layer": "frozen_bn", "frozen_stages": 1}}


class DeformableDETR(nn.Module):
    """``forward(pixel_values[B, 3, H, W], pixel_mask[B, H, W] | None) -> dict``:

    - ``pred_logits[B, Q, K]`` (sigmoid scores; no "no object" class) and ``pred_boxes[B, Q, 4]``
      (cx, cy, w, h) normalised to each image's unpadded size;
    - ``aux_outputs``: a list of such dicts, one per decoder layer but the last (auxiliary losses);
    - two-stage only, ``enc_outputs``: ``pred_logits[B, S, K]``, ``pred_boxes[B, S, 4]`` for the S encoder
      tokens (the proposal loss against class-agnostic targets).

    ``pixel_mask`` is 1 on real pixels; each image's real pixels must be its top-left rectangle (bottom/right
    padding). Results for an image do not depend on the rest of the batch (see the module docstring).
    ``num_feature_levels`` 1 reads stage4 only (single-scale); otherwise stage2-4 plus stride-2 convs.
    ``backbone_args`` default to frozen BN with the stem and stage1 frozen for ``resnet50``.
    ``DeformableDETR(**model.config)`` rebuilds the architecture.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        num_classes: int = 91,
        num_queries: int = 300,
        num_feature_levels: int = 4,
        hidden_dim: int = 256,
        nheads: int = 8,
        enc_layers: int = 6,
        dec_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        n_points: int = 4,
        with_box_refine: bool = False,
        two_stage: bool = False,
        backbone_args: dict | None = None,
        backbone_weights: str | os.PathLike | None = None,
    ):
        super().__init__()
        if not isinstance(backbone, str):
            raise TypeError(f"DeformableDETR: backbone must be a registered backbone name (str), got {backbone!r}")
        for name, value in (("num_classes", num_classes), ("num_queries", num_queries)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DeformableDETR: {name} must be a positive int, got {value!r}")
        if num_feature_levels != 1 and num_feature_levels < 3:
            raise ValueError(
                f"DeformableDETR: num_feature_levels must be 1 or >= 3 (stage2-4 + extra), got {num_feature_levels}"
            )
        backbone_args = dict(_DEFAULT_BACKBONE_ARGS.get(backbone, {}) if backbone_args is None else backbone_args)
        reserved = sorted(set(backbone_args) & set(_RESERVED_BACKBONE_ARGS))
        if reserved:
            raise ValueError(f"DeformableDETR: backbone_args may not set {', '.join(reserved)} (the model sets them)")
        out_indices = (3,) if num_feature_levels == 1 else (1, 2, 3)
        self.backbone = build_backbone(backbone, out_indices=out_indices, weights=backbone_weights, **backbone_args)
        channels = [self.backbone.feature_channels[name] for name in self.backbone.out_features]
        self.head = DeformableDETRHead(
            channels, num_classes, num_queries, num_feature_levels, hidden_dim, nheads, enc_layers, dec_layers,
            dim_feedforward, dropout, n_points, with_box_refine, two_stage,
        )
        self.config = dict(
            backbone=backbone, num_classes=num_classes, num_queries=num_queries,
            num_feature_levels=num_feature_levels, hidden_dim=hidden_dim, nheads=nheads, enc_layers=enc_layers,
            dec_layers=dec_layers, dim_feedforward=dim_feedforward, dropout=dropout, n_points=n_points,
            with_box_refine=with_box_refine, two_stage=two_stage, backbone_args=backbone_args,
        )

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None) -> dict:
        sizes = _image_sizes(pixel_values, pixel_mask)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, size in enumerate(sizes):
            groups.setdefault(size, []).append(i)
        if len(groups) == 1 and sizes[0] == tuple(pixel_values.shape[-2:]):  # nothing padded: one plain batch
            sources = self._project(pixel_values)
            return self.head(sources, [s.new_zeros(s.shape[0], *s.shape[-2:], dtype=torch.bool) for s in sources])
        per_group = {}
        for (h, w), index in groups.items():
            per_group[(h, w)] = self._project(pixel_values[index, :, :h, :w])
        B = pixel_values.shape[0]
        sources, masks = [], []
        for level in range(self.head.num_feature_levels):
            maps = {size: srcs[level] for size, srcs in per_group.items()}
            H = max(m.shape[-2] for m in maps.values())
            W = max(m.shape[-1] for m in maps.values())
            first = next(iter(maps.values()))
            source = first.new_zeros(B, first.shape[1], H, W)
            mask = torch.ones(B, H, W, dtype=torch.bool, device=first.device)
            for size, m in maps.items():
                index = torch.tensor(groups[size], device=first.device)
                h, w = m.shape[-2:]
                source[index, :, :h, :w] = m
                mask[index, :h, :w] = False
            sources.append(source)
            masks.append(mask)
        return self.head(sources, masks)

    def parameter_groups(self) -> dict[str, list[nn.Module]]:
        """Modules the Deformable-DETR recipe trains at its own learning rate (x0.1): the deformable
        attention's sampling offsets and the query reference points (absent in two-stage models)."""
        offsets = [m.sampling_offsets for m in self.modules() if isinstance(m, MSDeformAttn)]
        reference = getattr(self.head, "reference_points", None)
        return {"sampling_offsets": offsets, "reference_points": [reference] if isinstance(reference, nn.Module) else []}

    def _project(self, images: torch.Tensor) -> list[torch.Tensor]:
        features = self.backbone(images)
        return self.head.project([features[name] for name in self.backbone.out_features])

    def load_hint(self, state_dict: Mapping[str, torch.Tensor]) -> str:
        inner = {k[len("backbone.") :]: v for k, v in state_dict.items() if k.startswith("backbone.")}
        return self.backbone.load_hint(inner) if hasattr(self.backbone, "load_hint") else ""

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> "DeformableDETR":
        """Build and strictly load a model from a local checkpoint; returns it in eval mode.

        ``path``: our checkpoint (``{"model": state_dict, "meta": {"task": "detection", "model": config}}``),
        a Hugging Face ``DeformableDetrForObjectDetection`` folder (``config.json`` + weights; timm/torchvision
        ResNet-50 backbone), or a bare state dict with such a ``config.json`` beside it.
        """
        state_dict, config = read_pretrained(path, "detection", _config_from_json)
        model = cls(**config)
        weights = convert_deformable_detr_state_dict(
            state_dict, model.backbone.convert_state_dict, num_heads=len(model.head.class_embed)
        )
        load_strict(model, weights, path)
        return model.eval()


def _image_sizes(pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None) -> list[tuple[int, int]]:
    """Each image's real (h, w), checking that the real pixels are its top-left rectangle."""
    if pixel_values.dim() != 4:
        raise ValueError(f"DeformableDETR: pixel_values must be [B, C, H, W], got shape {tuple(pixel_values.shape)}")
    B, _, H, W = pixel_values.shape
    if pixel_mask is None:
        return [(H, W)] * B
    if tuple(pixel_mask.shape) != (B, H, W):
        raise ValueError(f"DeformableDETR: pixel_mask must be [B, H, W] = {(B, H, W)}, got {tuple(pixel_mask.shape)}")
    real = pixel_mask.bool()
    h, w = real.any(2).sum(1), real.any(1).sum(1)
    rows = torch.arange(H, device=real.device)[None, :, None] < h[:, None, None]
    cols = torch.arange(W, device=real.device)[None, None, :] < w[:, None, None]
    if not torch.equal(rows & cols, real) or bool((h == 0).any()):
        raise ValueError("DeformableDETR: each pixel_mask must be 1 on a non-empty top-left rectangle, 0 elsewhere")
    return list(zip(h.tolist(), w.tolist()))


# --- reading checkpoints -----------------------------------------------------------------------------


def _config_from_json(path: Path) -> dict:
    ours, hf = read_config_json(path, "detection", "deformable_detr", None)
    return ours if ours is not None else _config_from_hf(hf, path)


def _config_from_hf(cfg: Mapping, source) -> dict:
    """A Hugging Face ``DeformableDetrConfig`` (dict) -> our constructor arguments."""
    get = lambda key, default: cfg.get(key, default)  # noqa: E731  (HF leaves defaults out of config.json)
    pairs = [("encoder_attention_heads", "decoder_attention_heads", 8), ("encoder_ffn_dim", "decoder_ffn_dim", 1024),
             ("encoder_n_points", "decoder_n_points", 4)]
    for enc, dec, default in pairs:
        if get(enc, default) != get(dec, default):
            raise ValueError(f"{source}: {enc}={get(enc, default)} != {dec}={get(dec, default)} is not supported")
    if get("activation_function", "relu") != "relu" or get("position_embedding_type", "sine") != "sine":
        raise ValueError(f"{source}: only activation 'relu' and position_embedding_type 'sine' are supported")
    backbone = cfg.get("backbone_config") or {}
    name = backbone.get("backbone") if backbone else cfg.get("backbone", "resnet50")
    if backbone.get("model_type", "timm_backbone") != "timm_backbone" or name not in ("resnet50", None):
        raise ValueError(f"{source}: only the (timm) ResNet-50 backbone is supported, got {backbone or name!r}")
    dilation = bool(get("dilation", False)) or backbone.get("output_stride") == 16  # DC5: stage4 at stride 16
    dc5 = {"replace_stride_with_dilation": (False, False, True)} if dilation else {}
    two_stage = bool(get("two_stage", False))
    # transformers leaves defaults out of config.json: no id2label means its default of 2 labels.
    num_labels = cfg.get("num_labels") or len(cfg.get("id2label") or {}) or 2
    return dict(
        backbone="resnet50",
        num_classes=num_labels,
        num_queries=get("two_stage_num_proposals", 300) if two_stage else get("num_queries", 300),
        num_feature_levels=get("num_feature_levels", 4),
        hidden_dim=get("d_model", 256),
        nheads=get("encoder_attention_heads", 8),
        enc_layers=get("encoder_layers", 6),
        dec_layers=get("decoder_layers", 6),
        dim_feedforward=get("encoder_ffn_dim", 1024),
        dropout=get("dropout", 0.1),
        n_points=get("encoder_n_points", 4),
        with_box_refine=bool(get("with_box_refine", False)),
        two_stage=two_stage,
        backbone_args=dict(_DEFAULT_BACKBONE_ARGS["resnet50"], **dc5),
    )


# --- converting weights -----------------------------------------------------------------------------

_L = r"\.layers\.(\d+)\."
# Non-backbone keys -> ours, first match wins: ours; HF 4.x names (also what 5.x writes); HF 5.x in memory.
_RULES = [
    (r"^head\.", "head."),
    (r"^model\.(input_proj|level_embed|reference_points|enc_output|enc_output_norm|pos_trans|pos_trans_norm)\b",
     r"head.\1"),
    (r"^model\.query_position_embeddings\.", "head.query_embed."),
    (rf"^model\.encoder{_L}self_attn\.", r"head.encoder.layers.\1.self_attn."),
    (rf"^model\.decoder{_L}self_attn\.(?:out_proj|o_proj)\.", r"head.decoder.layers.\1.self_attn.out_proj."),
    (rf"^model\.decoder{_L}encoder_attn\.", r"head.decoder.layers.\1.cross_attn."),
    (rf"^model\.decoder{_L}encoder_attn_layer_norm\.", r"head.decoder.layers.\1.cross_attn_norm."),
    (rf"^model\.(encoder|decoder){_L}self_attn_layer_norm\.", r"head.\1.layers.\2.self_attn_norm."),
    (rf"^model\.(encoder|decoder){_L}(?:mlp\.)?fc1\.", r"head.\1.layers.\2.ffn.linear1."),
    (rf"^model\.(encoder|decoder){_L}(?:mlp\.)?fc2\.", r"head.\1.layers.\2.ffn.linear2."),
    (rf"^model\.(encoder|decoder){_L}final_layer_norm\.", r"head.\1.layers.\2.ffn.norm."),
    (r"^(?:model\.decoder\.)?(class_embed|bbox_embed)\.(\d+)\.", r"head.\1.\2."),
]
_COMPILED = [(re.compile(p), r) for p, r in _RULES]
_QKV = re.compile(rf"^model\.decoder{_L}self_attn\.([qkv])_proj\.(weight|bias)$")
_HEADS = re.compile(r"^head\.(class_embed|bbox_embed)\.(\d+)\.(.*)$")


def convert_deformable_detr_state_dict(
    state_dict: Mapping[str, torch.Tensor], convert_backbone: Callable[[Mapping], ConvertedWeights], num_heads: int
) -> ConvertedWeights:
    """Rename a Deformable DETR state dict (ours, HF 4.x / 5.x) into ``DeformableDETR`` keys.

    ``num_heads``: how many class/box heads the model has (1 when shared across decoder layers). Copies of a
    head (``model.decoder.{class,bbox}_embed`` beside the top-level ones; the repeated shared head without
    box refinement) must be equal and load once. transformers 5.x ties every ``class_embed.k`` to
    ``class_embed.0``, even with box refinement, and saves only head 0: when all heads but 0 are absent they
    are filled from it (the model 5.x builds from such a file).
    """
    encoder = convert_backbone(state_dict)
    out = {f"backbone.{k}": v for k, v in encoder.state_dict.items()}
    origin = {f"backbone.{k}": o for k, o in encoder.origin.items()}
    qkv: dict[tuple[str, str], dict[str, tuple[str, torch.Tensor]]] = {}
    for key in encoder.dropped:
        m = _QKV.match(key)
        if m:  # nn.MultiheadAttention packs q, k, v row-wise into in_proj
            qkv.setdefault((m[1], m[3]), {})[m[2]] = (key, state_dict[key])
            continue
        new = key
        for pattern, repl in _COMPILED:
            if pattern.match(key):
                new = pattern.sub(repl, key, count=1)
                break
        if new in out and not torch.equal(out[new], state_dict[key]):
            raise ValueError(f"{origin[new]} and {key} are copies of one head but hold different values")
        out[new], origin[new] = state_dict[key], key
    for (layer, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"decoder layer {layer} self-attention has {sorted(parts)} projections, not q, k and v")
        new = f"head.decoder.layers.{layer}.self_attn.in_proj_{kind}"
        out[new] = torch.cat([parts[c][1] for c in "qkv"])
        origin[new] = parts["q"][0]
    _fit_heads(out, origin, num_heads)
    return ConvertedWeights(out, origin, [], encoder.format, encoder.prefix)


def _fit_heads(out: dict, origin: dict, num_heads: int) -> None:
    """Drop repeats of a shared head (checking they are repeats); fill heads left out as tied."""
    for key in [k for k in out if _HEADS.match(k)]:
        kind, index, rest = _HEADS.match(key).groups()
        if int(index) >= num_heads:
            first = out.get(f"head.{kind}.0.{rest}")
            if first is None or not torch.equal(first, out[key]):
                raise ValueError(
                    f"{origin[key]} differs from {kind}.0: the weights have per-layer heads (box refinement) but "
                    f"the configuration shares one head"
                )
            del out[key], origin[key]
    others = [k for k in out if k.startswith("head.class_embed.") and not k.startswith("head.class_embed.0.")]
    if num_heads > 1 and not others:
        for key in [k for k in out if k.startswith("head.class_embed.0.")]:
            rest = key[len("head.class_embed.0.") :]
            for index in range(1, num_heads):
                out[f"head.class_embed.{index}.{rest}"] = out[key]
                origin[f"head.class_embed.{index}.{rest}"] = f"{origin[key]} (tied)"
