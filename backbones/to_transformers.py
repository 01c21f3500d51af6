"""Our backbones in Hugging Face transformers' terms: the reverse of ``pvt_v2_keys`` / ``resnet`` conversion.

``hf_encoder(backbone, target)`` returns the ``config.json`` fields and the state dict (transformers' key names,
the ones every 4.x and 5.x release reads and 5.x writes) of one encoder:

- ``"pvt_v2"``: ``PvtV2Model`` (``encoder.layers.N``), any PVTv2 or MiT encoder;
- ``"segformer"``: the encoder of ``Segformer*`` / ``GLPN*`` (``encoder.block.N``); no linear attention;
- ``"resnet"``: ``ResNetModel`` (``embedder``, ``encoder.stages.N``) for torchvision's ResNet-50, no dilation.

The rules are the forward rules read backwards; the writer (``tasks.common.to_transformers``) proves each file
by converting it forward again with our loader. What transformers cannot hold exactly is said in ``notes``:
its Segformer / GLPN run every LayerNorm with eps 1e-5, its PvtV2 with one ``layer_norm_eps``, so an encoder
with other epsilons is written with theirs (the writer measures what that changes and refuses a model it moves).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .weights import RenameRules


def _stage(fmt: str) -> Callable:
    return lambda m: fmt.format(int(m[1]) - 1)


_BLOCK = [
    (r"\.norm1\.", ".layer_norm_1."),
    (r"\.norm2\.", ".layer_norm_2."),
    (r"\.mlp\.fc1\.", ".mlp.dense1."),
    (r"\.mlp\.fc2\.", ".mlp.dense2."),
    (r"\.mlp\.dwconv\.", ".mlp.dwconv.dwconv."),
]
# ours -> transformers, applied after Hugging Face's split of our fused ``attn.kv`` into ``attn.k`` / ``attn.v``.
RULES = {
    "pvt_v2": RenameRules([
        (r"^stage(\d)\.patch_embed\.norm\.", _stage("encoder.layers.{}.patch_embedding.layer_norm.")),
        (r"^stage(\d)\.patch_embed\.", _stage("encoder.layers.{}.patch_embedding.")),
        (r"^stage(\d)\.blocks\.", _stage("encoder.layers.{}.blocks.")),
        (r"^stage(\d)\.norm\.", _stage("encoder.layers.{}.layer_norm.")),
        (r"\.attn\.q\.", ".attention.query."),
        (r"\.attn\.k\.", ".attention.key."),
        (r"\.attn\.v\.", ".attention.value."),
        (r"\.attn\.sr\.", ".attention.spatial_reduction."),
        (r"\.attn\.norm\.", ".attention.layer_norm."),
        (r"\.attn\.proj\.", ".attention.proj."),
        *_BLOCK,
    ]),
    "segformer": RenameRules([
        (r"^stage(\d)\.patch_embed\.norm\.", _stage("encoder.patch_embeddings.{}.layer_norm.")),
        (r"^stage(\d)\.patch_embed\.", _stage("encoder.patch_embeddings.{}.")),
        (r"^stage(\d)\.blocks\.", _stage("encoder.block.{}.")),
        (r"^stage(\d)\.norm\.", _stage("encoder.layer_norm.{}.")),
        (r"\.attn\.q\.", ".attention.self.query."),
        (r"\.attn\.k\.", ".attention.self.key."),
        (r"\.attn\.v\.", ".attention.self.value."),
        (r"\.attn\.sr\.", ".attention.self.sr."),
        (r"\.attn\.norm\.", ".attention.self.layer_norm."),
        (r"\.attn\.proj\.", ".attention.output.dense."),
        *_BLOCK,
    ]),
    "resnet": RenameRules([
        (r"^stem\.conv1\.", "embedder.embedder.convolution."),
        (r"^stem\.bn1\.", "embedder.embedder.normalization."),
        (r"^stage(\d)\.(\d+)\.downsample\.0\.", lambda m: f"encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.shortcut.convolution."),
        (r"^stage(\d)\.(\d+)\.downsample\.1\.", lambda m: f"encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.shortcut.normalization."),
        (r"^stage(\d)\.(\d+)\.conv(\d)\.",
         lambda m: f"encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.layer.{int(m[3]) - 1}.convolution."),
        (r"^stage(\d)\.(\d+)\.bn(\d)\.",
         lambda m: f"encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.layer.{int(m[3]) - 1}.normalization."),
    ]),
}
SEGFORMER_EPS = 1e-5  # transformers' Segformer / GLPN build every LayerNorm with nn.LayerNorm's default


@dataclass
class HFEncoder:
    """One encoder in transformers' terms: ``config`` (its fields of ``PvtV2Config`` / ``SegformerConfig`` /
    ``ResNetConfig``), ``state_dict`` (transformers' names, without the model's prefix) and ``notes`` (what it
    cannot hold exactly, one sentence each)."""

    config: dict
    state_dict: dict[str, torch.Tensor]
    notes: list[str] = field(default_factory=list)


def hf_encoder(backbone: nn.Module, target: str) -> HFEncoder:
    """``backbone`` (from ``build_backbone``) as transformers' ``target`` encoder; a backbone that target cannot
    express is a ValueError saying why."""
    if target not in RULES:
        raise ValueError(f"hf_encoder: target must be one of {', '.join(RULES)}, got {target!r}")
    name = getattr(backbone, "name", type(backbone).__name__)
    if target == "resnet":
        return _resnet(backbone, name)
    cfg = getattr(backbone, "config", None)
    if cfg is None or not hasattr(cfg, "linear_attention"):
        raise ValueError(f"{name} is not a PVTv2/MiT encoder: transformers' {target} cannot hold it")
    if target == "segformer" and (cfg.linear_attention or not cfg.qkv_bias):
        what = "linear spatial-reduction attention" if cfg.linear_attention else "attention without q/k/v bias"
        raise ValueError(f"{name} has {what}, which transformers' Segformer/GLPN encoder cannot express")
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in _arch_fields(cfg).items()}
    notes = []
    if target == "pvt_v2":
        config.update(layer_norm_eps=cfg.layer_norm_eps, qkv_bias=cfg.qkv_bias, linear_attention=cfg.linear_attention)
        if cfg.embed_layer_norm_eps != cfg.layer_norm_eps:
            notes.append(f"transformers' PvtV2 uses one LayerNorm eps ({cfg.layer_norm_eps:g}); this encoder's patch-"
                         f"embedding and reduction norms use {cfg.embed_layer_norm_eps:g}")
    elif (cfg.layer_norm_eps, cfg.embed_layer_norm_eps) != (SEGFORMER_EPS, SEGFORMER_EPS):
        notes.append(f"transformers' Segformer/GLPN run every LayerNorm with eps {SEGFORMER_EPS:g}; this encoder uses "
                     f"{cfg.layer_norm_eps:g} (blocks, stages) and {cfg.embed_layer_norm_eps:g} (embeddings, reduction)")
    return HFEncoder(config, rename(backbone.state_dict(), RULES[target]), notes)


def _arch_fields(cfg) -> dict:
    names = ("num_channels", "depths", "hidden_sizes", "num_attention_heads", "mlp_ratios", "sr_ratios",
             "patch_sizes", "strides", "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob",
             "drop_path_rate", "initializer_range")
    return {"num_encoder_blocks": 4, **{n: getattr(cfg, n) for n in names}}


def _resnet(backbone: nn.Module, name: str) -> HFEncoder:
    if name != "resnet50":
        raise ValueError(f"{name} is not a ResNet-50: transformers' ResNet backbone holds ResNet-50 here")
    if any(getattr(m, "dilation", (1, 1)) != (1, 1) for m in backbone.modules() if isinstance(m, nn.Conv2d)):
        raise ValueError("a dilated (DC5) ResNet-50 has no transformers ResNetConfig (only timm backbones dilate)")
    config = dict(model_type="resnet", depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048], embedding_size=64,
                  layer_type="bottleneck", hidden_act="relu", downsample_in_first_stage=False,
                  downsample_in_bottleneck=False, num_channels=backbone.num_channels)
    state = {k: v for k, v in backbone.state_dict().items() if not k.endswith("num_batches_tracked")}
    return HFEncoder(config, rename(state, RULES["resnet"]))


def rename(state_dict, rules: RenameRules) -> dict[str, torch.Tensor]:
    """``state_dict`` (ours) under ``rules``, with each fused ``attn.kv`` split into K (its first rows) and V."""
    out = {}
    for key, value in state_dict.items():
        if ".attn.kv." in key:
            k, v = value.chunk(2, dim=0)
            out[rules(key.replace(".attn.kv.", ".attn.k."))] = k
            out[rules(key.replace(".attn.kv.", ".attn.v."))] = v
        else:
            out[rules(key)] = value
    return {k: v.detach().contiguous().clone() for k, v in out.items()}
