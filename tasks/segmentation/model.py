"""SegFormer: a registered backbone's four stages into the all-MLP decoder, logits at stride 4.

``SegFormer.from_pretrained`` reads our training checkpoints, Hugging Face
``SegformerForSemanticSegmentation`` folders (transformers 4.x and 5.x key names) and the original mmseg
SegFormer checkpoints; the weight conversion and the architecture read from each format live here too.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from backbones import build_backbone
from backbones.pvt_v2 import HF_MIT_FIELDS, mit_variant
from backbones.pvt_v2_weights import convert_pvt_v2_state_dict
from backbones.weights import ConvertedWeights
from heads.segformer_head import SegFormerHead
from tasks.common.checkpoint import load_strict, read_config_json, read_pretrained

_SMALL_BACKBONES = ("mit_b0", "mit_b1", "pvt_v2_b0", "pvt_v2_b1")  # decoder width 256; all others 768
_RESERVED_BACKBONE_ARGS = ("out_features", "out_indices", "weights")


class SegFormer(nn.Module):
    """``forward(pixel_values: Tensor[B, 3, H, W]) -> Tensor[B, K, H/4, W/4]`` logits.

    The logits' size is that of the backbone's stride-4 stage (``floor((n - 1) / 4) + 1`` for MiT/PVTv2).
    ``decoder_dim`` None means 256 for b0/b1-sized backbones and 768 otherwise (the paper's choice).
    ``backbone_args`` are overrides for ``build_backbone`` (see ``PVTv2Config``); ``backbone_weights`` is a
    local path loaded into the backbone (ImageNet pre-training). ``class_names`` (one per class) is kept for
    reports. ``SegFormer(**model.config)`` rebuilds the architecture.
    """

    def __init__(
        self,
        backbone: str = "mit_b0",
        num_classes: int = 150,
        decoder_dim: int | None = None,
        dropout: float = 0.1,
        backbone_args: dict | None = None,
        backbone_weights: str | os.PathLike | None = None,
        class_names: Sequence[str] | None = None,
    ):
        super().__init__()
        if not isinstance(backbone, str):
            raise TypeError(f"SegFormer: backbone must be a registered backbone name (str), got {backbone!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"SegFormer: num_classes must be a positive int, got {num_classes!r}")
        backbone_args = dict(backbone_args or {})
        reserved = sorted(set(backbone_args) & set(_RESERVED_BACKBONE_ARGS))
        if reserved:
            raise ValueError(f"SegFormer: backbone_args may not set {', '.join(reserved)} (SegFormer sets them itself)")
        if class_names is not None:
            if isinstance(class_names, str) or len(class_names) != num_classes:
                raise ValueError(
                    f"SegFormer: class_names must be a sequence of num_classes={num_classes} names, got {class_names!r}"
                )
            class_names = tuple(str(n) for n in class_names)
        if decoder_dim is None:
            decoder_dim = 256 if backbone in _SMALL_BACKBONES else 768
        self.backbone = build_backbone(backbone, out_indices=(0, 1, 2, 3), weights=backbone_weights, **backbone_args)
        channels = [self.backbone.feature_channels[name] for name in self.backbone.out_features]
        self.head = SegFormerHead(channels, num_classes, embed_dim=decoder_dim, dropout=dropout)
        self.num_classes = num_classes
        self.class_names = class_names
        self.config = dict(
            backbone=backbone,
            num_classes=num_classes,
            decoder_dim=decoder_dim,
            dropout=dropout,
            backbone_args=backbone_args,
            class_names=class_names,
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.backbone(pixel_values)
        return self.head([features[name] for name in self.backbone.out_features])

    def load_hint(self, state_dict: Mapping[str, torch.Tensor]) -> str:
        """Why ``state_dict`` (in our keys) does not fit, when the backbone can tell (see ``check_state_dict``)."""
        inner = {k[len("backbone.") :]: v for k, v in state_dict.items() if k.startswith("backbone.")}
        return self.backbone.load_hint(inner) if hasattr(self.backbone, "load_hint") else ""

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **backbone_args) -> "SegFormer":
        """Build and strictly load a SegFormer from a local checkpoint; returns it in eval mode.

        ``path`` is one of:
        - our checkpoint: a ``.pth`` holding ``{"model": state_dict, "meta": {"task": "segmentation",
          "model": config}}`` (written by ``tools/train.py``);
        - a Hugging Face ``SegformerForSemanticSegmentation`` folder (``config.json`` + weights);
        - a bare state dict file (``.pth``/``.bin``/``.safetensors``, our / HF 4.x / HF 5.x keys) with a
          ``config.json`` beside it (a Hugging Face config, or ``{"task": "segmentation", "model": config}``);
        - an original mmseg SegFormer checkpoint (``backbone.patch_embed1…``, ``decode_head.linear_c1…``);
          its architecture is read from the weight shapes (MiT attention heads and strides assumed).

        ``backbone_args`` override the stored backbone arguments. Hugging Face runs every LayerNorm with eps
        1e-5, so HF folders load with ``layer_norm_eps=1e-5, embed_layer_norm_eps=1e-5`` (outputs equal
        HF's); pass ``layer_norm_eps=1e-6`` to use the eps the MiT weights were trained with in mmseg.
        """
        state_dict, config = read_pretrained(
            path, "segmentation", _config_from_json, _config_from_mmseg_file,
            "an mmseg SegFormer checkpoint (decode_head.linear_fuse.conv.*)",
        )
        config["backbone_args"] = {**(config.get("backbone_args") or {}), **backbone_args}
        model = cls(**config)
        weights = convert_segformer_state_dict(state_dict, model.backbone.convert_state_dict)
        load_strict(model, weights, path)
        return model.eval()


# --- reading checkpoints -----------------------------------------------------------------------------


def _config_from_mmseg_file(state_dict: Mapping, meta) -> dict | None:
    """The config of a checkpoint of the original code, read from its weight shapes (None if it is not one)."""
    if "decode_head.linear_fuse.conv.weight" in state_dict:
        classes = meta.get("CLASSES") if isinstance(meta, Mapping) else None
        return _config_from_mmseg(state_dict, classes)
    return None


def _config_from_json(path: Path) -> dict:
    ours, hf = read_config_json(path, "segmentation", "segformer", "SegformerForSemanticSegmentation", "segmentation head")
    return ours if ours is not None else _config_from_hf(hf)


# Hugging Face SegformerConfig defaults, for config.json files that leave a field out.
_HF_DEFAULTS = dict(
    num_channels=3, num_encoder_blocks=4, depths=[2, 2, 2, 2], sr_ratios=[8, 4, 2, 1],
    hidden_sizes=[32, 64, 160, 256], patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2],
    num_attention_heads=[1, 2, 5, 8], mlp_ratios=[4, 4, 4, 4], hidden_act="gelu", hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.1, drop_path_rate=0.1, decoder_hidden_size=256,
)


def _config_from_hf(cfg: Mapping) -> dict:
    cfg = {**_HF_DEFAULTS, **cfg}
    if cfg["num_encoder_blocks"] != 4:
        raise ValueError(f"num_encoder_blocks={cfg['num_encoder_blocks']} is not supported: our encoders have 4 stages")
    class_names = None
    if cfg.get("id2label"):
        labels = {int(k): str(v) for k, v in cfg["id2label"].items()}
        class_names = [labels[i] for i in sorted(labels)]
        if class_names == [f"LABEL_{i}" for i in range(len(class_names))]:
            class_names = None  # transformers' placeholders, not names
    num_classes = cfg.get("num_labels") or len(cfg.get("id2label") or {}) or 2  # 2: PretrainedConfig's default
    if class_names is not None and len(class_names) != num_classes:
        class_names = None
    name, args = mit_variant({k: cfg[k] for k in HF_MIT_FIELDS})
    args.update(layer_norm_eps=1e-5, embed_layer_norm_eps=1e-5)  # HF Segformer's LayerNorms ignore config eps
    return dict(
        backbone=name,
        num_classes=num_classes,
        decoder_dim=cfg["decoder_hidden_size"],
        dropout=cfg["classifier_dropout_prob"],
        backbone_args=args,
        class_names=class_names,
    )


def _config_from_mmseg(sd: Mapping, classes) -> dict:
    """Architecture from an mmseg SegFormer state dict's shapes (heads and strides are MiT's, not stored)."""
    arch: dict[str, list] = dict(hidden_sizes=[], depths=[], mlp_ratios=[], sr_ratios=[], patch_sizes=[])
    for n in range(1, 5):
        proj = sd.get(f"backbone.patch_embed{n}.proj.weight")
        fc1 = sd.get(f"backbone.block{n}.0.mlp.fc1.weight")
        if proj is None or fc1 is None:
            raise ValueError(f"the mmseg checkpoint has no backbone.patch_embed{n} / backbone.block{n}.0 weights")
        arch["hidden_sizes"].append(proj.shape[0])
        arch["patch_sizes"].append(proj.shape[-1])
        arch["depths"].append(len({k.split(".")[2] for k in sd if k.startswith(f"backbone.block{n}.")}))
        arch["mlp_ratios"].append(fc1.shape[0] // fc1.shape[1])
        sr = sd.get(f"backbone.block{n}.0.attn.sr.weight")
        arch["sr_ratios"].append(1 if sr is None else sr.shape[-1])
    arch["num_channels"] = sd["backbone.patch_embed1.proj.weight"].shape[1]
    num_classes = sd["decode_head.linear_pred.weight"].shape[0]
    names = list(classes) if isinstance(classes, (list, tuple)) and len(classes) == num_classes else None
    name, args = mit_variant(arch)
    return dict(
        backbone=name,
        num_classes=num_classes,
        decoder_dim=sd["decode_head.linear_fuse.conv.weight"].shape[0],
        backbone_args=args,
        class_names=names,
    )


# --- converting weights -----------------------------------------------------------------------------

# Decode-head keys -> ours, first matching rule wins: ours, HF 4.x (also what transformers 5.x writes),
# HF 5.x in memory (linear_projections), original mmseg (linear_c{n}, linear_fuse.conv/bn, linear_pred).
_HEAD_RULES = [
    (r"^head\.", "head."),
    (r"^decode_head\.(?:linear_c|linear_projections)\.(\d+)\.proj\.", r"head.linear_c.\1."),
    (r"^decode_head\.linear_c(\d)\.proj\.", lambda m: f"head.linear_c.{int(m[1]) - 1}."),
    (r"^decode_head\.linear_fuse\.conv\.", "head.linear_fuse."),
    (r"^decode_head\.linear_fuse\.bn\.", "head.bn."),
    (r"^decode_head\.linear_fuse\.", "head.linear_fuse."),
    (r"^decode_head\.batch_norm\.", "head.bn."),
    (r"^decode_head\.(?:classifier|linear_pred)\.", "head.classifier."),
]
_HEAD_COMPILED = [(re.compile(p), r) for p, r in _HEAD_RULES]
_HEAD_UNUSED = ("decode_head.conv_seg.",)  # mmseg BaseDecodeHead's classifier, never run by SegFormer


def convert_segformer_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    convert_backbone: Callable[[Mapping], ConvertedWeights] = convert_pvt_v2_state_dict,
) -> ConvertedWeights:
    """Rename a SegFormer state dict (ours, HF 4.x/5.x, mmseg) into ``SegFormer`` keys.

    The encoder goes through the backbone's converter (for PVTv2/MiT: any published format, any prefix);
    keys that neither converter knows keep their name, so the strict load reports them as unexpected.
    """
    encoder = convert_backbone(state_dict)
    out = {f"backbone.{k}": v for k, v in encoder.state_dict.items()}
    origin = {f"backbone.{k}": o for k, o in encoder.origin.items()}
    dropped = []
    for key in encoder.dropped:
        if key.startswith(_HEAD_UNUSED):
            dropped.append(key)
            continue
        new = key
        for pattern, repl in _HEAD_COMPILED:
            if pattern.match(key):
                new = pattern.sub(repl, key, count=1)
                break
        out[new] = state_dict[key]
        origin[new] = key
    return ConvertedWeights(out, origin, dropped, encoder.format, encoder.prefix)
