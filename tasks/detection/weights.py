"""What ``DeformableDETR.from_pretrained`` reads: our checkpoints and Hugging Face
``DeformableDetrForObjectDetection`` folders (transformers 4.x names, as 5.x also writes, and the 5.x in-memory
names).

The backbone converts its own keys; the rules below rename the rest (``tasks.common.pretrained`` applies them
with ``backbones.weights.RenameRules``' semantics), and ``finish`` packs the decoder's q/k/v projections into
``nn.MultiheadAttention``'s ``in_proj`` and fits the class/box heads to the configuration.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch

from backbones.pvt_v2_arch import pvt_v2_from_hf_config
from backbones.to_transformers import hf_encoder, rename
from backbones.weights import RenameRules
from tasks.common.pretrained import TaskWeights, class_names_from_hf, hf_num_labels
from tasks.common.to_transformers import HFModel
from tasks.common.zoo import PublishedModel

# The published checkpoints' backbone: torchvision ResNet-50, frozen BN, stem and layer1 not trained.
RESNET50_ARGS = {"norm_layer": "frozen_bn", "frozen_stages": 1}

_L = r"\.layers\.(\d+)\."
HEAD_RULES = RenameRules([
    (r"^model\.(input_proj|level_embed|reference_points|enc_output|enc_output_norm|pos_trans|pos_trans_norm)\b",
     r"head.\1"),
    (r"^model\.query_position_embeddings\.", "head.query_embed."),
    (rf"^model\.encoder{_L}self_attn\.", r"head.encoder.layers.\1.self_attn."),
    (rf"^model\.decoder{_L}self_attn\.(?:out_proj|o_proj)\.", r"head.decoder.layers.\1.self_attn.out_proj."),
    (rf"^model\.decoder{_L}self_attn\.([qkv])_proj\.", r"head.decoder.layers.\1.self_attn.\2_proj."),
    (rf"^model\.decoder{_L}encoder_attn\.", r"head.decoder.layers.\1.cross_attn."),
    (rf"^model\.decoder{_L}encoder_attn_layer_norm\.", r"head.decoder.layers.\1.cross_attn_norm."),
    (rf"^model\.(encoder|decoder){_L}self_attn_layer_norm\.", r"head.\1.layers.\2.self_attn_norm."),
    (rf"^model\.(encoder|decoder){_L}(?:mlp\.)?fc1\.", r"head.\1.layers.\2.ffn.linear1."),
    (rf"^model\.(encoder|decoder){_L}(?:mlp\.)?fc2\.", r"head.\1.layers.\2.ffn.linear2."),
    (rf"^model\.(encoder|decoder){_L}final_layer_norm\.", r"head.\1.layers.\2.ffn.norm."),
    (r"^(?:model\.decoder\.)?(class_embed|bbox_embed)\.(\d+)\.", r"head.\1.\2."),
])
# The way back (to_transformers): ours -> the names transformers 4.x reads and 5.x writes; the decoder's packed
# ``in_proj`` is split into q/k/v first, the class/box heads are placed by ``_hf_heads``.
TO_HF_RULES = RenameRules([
    (r"^head\.(input_proj|level_embed|reference_points|enc_output|enc_output_norm|pos_trans|pos_trans_norm)\b",
     r"model.\1"),
    (r"^head\.query_embed\.", "model.query_position_embeddings."),
    (rf"^head\.decoder{_L}self_attn\.in_proj_([qkv])_(weight|bias)$", r"model.decoder.layers.\1.self_attn.\2_proj.\3"),
    (rf"^head\.decoder{_L}cross_attn_norm\.", r"model.decoder.layers.\1.encoder_attn_layer_norm."),
    (rf"^head\.decoder{_L}cross_attn\.", r"model.decoder.layers.\1.encoder_attn."),
    (rf"^head\.(encoder|decoder){_L}self_attn_norm\.", r"model.\1.layers.\2.self_attn_layer_norm."),
    (rf"^head\.(encoder|decoder){_L}self_attn\.", r"model.\1.layers.\2.self_attn."),
    (rf"^head\.(encoder|decoder){_L}ffn\.linear1\.", r"model.\1.layers.\2.fc1."),
    (rf"^head\.(encoder|decoder){_L}ffn\.linear2\.", r"model.\1.layers.\2.fc2."),
    (rf"^head\.(encoder|decoder){_L}ffn\.norm\.", r"model.\1.layers.\2.final_layer_norm."),
])
_QKV = re.compile(r"^head\.decoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$")
_HEADS = re.compile(r"^head\.(class_embed|bbox_embed)\.(\d+)\.(.*)$")


def config_from_hf(cfg: Mapping, source) -> dict:
    """A Hugging Face ``DeformableDetrConfig`` (dict) -> ``DeformableDETR`` arguments."""
    get = lambda key, default: cfg.get(key, default)  # noqa: E731  (HF leaves defaults out of config.json)
    pairs = [("encoder_attention_heads", "decoder_attention_heads", 8), ("encoder_ffn_dim", "decoder_ffn_dim", 1024),
             ("encoder_n_points", "decoder_n_points", 4)]
    for enc, dec, default in pairs:
        if get(enc, default) != get(dec, default):
            raise ValueError(f"{source}: {enc}={get(enc, default)} != {dec}={get(dec, default)} is not supported")
    if get("activation_function", "relu") != "relu" or get("position_embedding_type", "sine") != "sine":
        raise ValueError(f"{source}: only activation 'relu' and position_embedding_type 'sine' are supported")
    two_stage = bool(get("two_stage", False))
    num_classes = hf_num_labels(cfg)
    backbone, backbone_args, stages = _backbone_from_hf(cfg, source)
    return dict(
        backbone=backbone,
        num_classes=num_classes,
        class_names=class_names_from_hf(cfg, num_classes),
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
        backbone_stages=stages,
        backbone_args=backbone_args,
    )


# Hugging Face ResNetConfig fields that must hold for the network to be torchvision's ResNet-50.
_RESNET50 = dict(depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048], embedding_size=64, layer_type="bottleneck",
                 hidden_act="relu", downsample_in_first_stage=False, downsample_in_bottleneck=False)


def _backbone_from_hf(cfg: Mapping, source) -> tuple[str, dict, list[str]]:
    """``(registered backbone, its overrides, the stages the transformer reads)`` for the backbone of a Hugging
    Face Deformable-DETR: timm's ResNet-50 (the published checkpoints; transformers 4.x leave
    ``backbone_config`` null), a ``ResNetConfig`` ResNet-50 or a ``PvtV2Config`` (any ``out_features``)."""
    levels = cfg.get("num_feature_levels", 4)
    backbone = cfg.get("backbone_config") or {}
    kind = backbone.get("model_type") if backbone else ("timm_backbone" if cfg.get("use_timm_backbone", True) else None)
    if kind == "timm_backbone":
        name = backbone.get("backbone") or cfg.get("backbone") or "resnet50"
        if name != "resnet50":
            raise ValueError(f"{source}: the timm backbone {name!r} is not supported (timm's resnet50 is)")
        indices = backbone.get("out_indices") or ([2, 3, 4] if levels > 1 else [4])
        if not set(indices) <= {1, 2, 3, 4}:
            raise ValueError(f"{source}: timm out_indices {indices} must name layer1-4 (1-4)")
        dc5 = bool(cfg.get("dilation", False)) or backbone.get("output_stride") == 16  # stage4 at stride 16
        args = dict(RESNET50_ARGS, **({"replace_stride_with_dilation": (False, False, True)} if dc5 else {}))
        return "resnet50", args, [f"stage{i}" for i in indices]
    if kind == "resnet":
        wrong = {k: backbone[k] for k, v in _RESNET50.items() if k in backbone and backbone[k] != v}
        if wrong:
            raise ValueError(f"{source}: the Hugging Face ResNet backbone is not a ResNet-50 ({wrong}); ResNet-50 is supported")
        return "resnet50", dict(RESNET50_ARGS), _stages(cfg, backbone, source)
    if kind == "pvt_v2":
        name, args = pvt_v2_from_hf_config(backbone, source)
        return name, args, _stages(cfg, backbone, source)
    raise ValueError(
        f"{source}: the backbone {kind or cfg.get('backbone')!r} is not one our registry has (supported: timm "
        "or Hugging Face ResNet-50, Hugging Face PvtV2)"
    )


def _stages(cfg: Mapping, backbone: Mapping, source) -> list[str]:
    stages = backbone.get("out_features") or ["stage4"]  # transformers' default: the last stage
    if not set(stages) <= {"stage1", "stage2", "stage3", "stage4"}:
        raise ValueError(f"{source}: backbone out_features {stages} must be among stage1-stage4")
    return list(stages) if cfg.get("num_feature_levels", 4) > 1 else list(stages[-1:])  # single-scale: the last


def finish(out: dict, origin: dict, model) -> None:
    """Pack q/k/v into ``in_proj`` (row-wise, as ``nn.MultiheadAttention`` holds them) and fit the heads.

    Copies of a head (``model.decoder.{class,bbox}_embed`` beside the top-level ones; the repeated shared head
    without box refinement) must be equal and load once. transformers 5.x ties every ``class_embed.k`` to
    ``class_embed.0``, even with box refinement, and saves only head 0: when all heads but 0 are absent they
    are filled from it (the model 5.x builds from such a file).
    """
    qkv: dict[tuple[str, str], dict[str, str]] = {}
    for key in [k for k in out if _QKV.match(k)]:
        layer, part, kind = _QKV.match(key).groups()
        qkv.setdefault((layer, kind), {})[part] = key
    for (layer, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"decoder layer {layer} self-attention has {sorted(parts)} projections, not q, k and v")
        new = f"head.decoder.layers.{layer}.self_attn.in_proj_{kind}"
        out[new] = torch.cat([out.pop(parts[c]) for c in "qkv"])
        origin[new] = origin.pop(parts["q"])
        origin.pop(parts["k"]), origin.pop(parts["v"])
    _fit_heads(out, origin, len(model.head.class_embed))


def _fit_heads(out: dict, origin: dict, num_heads: int) -> None:
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


def to_transformers(model) -> HFModel:
    """A Deformable-DETR as transformers' ``DeformableDetrForObjectDetection`` with its backbone as a
    ``backbone_config``: ``ResNetConfig`` (ResNet-50, not dilated) or ``PvtV2Config`` (any PVTv2/MiT)."""
    cfg = model.config
    kind = "resnet" if cfg["backbone"] == "resnet50" else "pvt_v2"
    encoder = hf_encoder(model.backbone, kind)
    backbone = {"model_type": kind, **encoder.config, "out_features": list(cfg["backbone_stages"])}
    state = {f"model.backbone.conv_encoder.model.{k}": v for k, v in encoder.state_dict.items()}
    head = {}
    for key, value in model.state_dict().items():
        if key.endswith(("self_attn.in_proj_weight", "self_attn.in_proj_bias")):
            for part, chunk in zip("qkv", value.chunk(3, dim=0)):
                head[key.replace("in_proj_", f"in_proj_{part}_")] = chunk
        elif key.startswith("head.") and not key.startswith(("head.class_embed.", "head.bbox_embed.")):
            head[key] = value
    state.update(rename(head, TO_HF_RULES))
    state.update(_hf_heads(model))
    config = {
        "model_type": "deformable_detr", "architectures": ["DeformableDetrForObjectDetection"],
        "backbone_config": backbone, "backbone": None, "use_timm_backbone": False, "use_pretrained_backbone": False,
        "d_model": cfg["hidden_dim"], "encoder_layers": cfg["enc_layers"], "decoder_layers": cfg["dec_layers"],
        "encoder_attention_heads": cfg["nheads"], "decoder_attention_heads": cfg["nheads"],
        "encoder_ffn_dim": cfg["dim_feedforward"], "decoder_ffn_dim": cfg["dim_feedforward"],
        "encoder_n_points": cfg["n_points"], "decoder_n_points": cfg["n_points"], "dropout": cfg["dropout"],
        "num_feature_levels": cfg["num_feature_levels"], "num_queries": cfg["num_queries"],
        "two_stage_num_proposals": cfg["num_queries"], "with_box_refine": cfg["with_box_refine"],
        "two_stage": cfg["two_stage"], "activation_function": "relu", "position_embedding_type": "sine",
    }
    return HFModel(config, state, "object-detection", "detr", encoder.notes)


def _hf_heads(model) -> dict:
    """The class and box heads where transformers keeps them: one per prediction (the decoder layers, plus the
    encoder's proposals in two-stage), copies of our one head without box refinement; under ``model.decoder.``
    where the decoder uses them (boxes with refinement; classes too in two-stage)."""
    cfg, head = model.config, model.head
    count = cfg["dec_layers"] + cfg["two_stage"]
    out = {}
    for kind, modules in (("class_embed", head.class_embed), ("bbox_embed", head.bbox_embed)):
        inside = cfg["two_stage"] or (kind == "bbox_embed" and cfg["with_box_refine"])
        prefix = f"model.decoder.{kind}" if inside else kind
        for i in range(count):
            source = modules[i if len(modules) > 1 else 0]
            out.update({f"{prefix}.{i}.{k}": v.detach().clone() for k, v in source.state_dict().items()})
    return out


WEIGHTS = TaskWeights(
    task="detection",
    hf_model_types=("deformable_detr",),
    hf_architectures=(),  # any: a folder without the class heads fails the strict load, naming them
    config_from_hf=config_from_hf,
    head_rules=HEAD_RULES,
    finish=finish,
    to_transformers=to_transformers,
)

# The published checkpoints (the model zoo: short names from_pretrained accepts); the numbers are the authors'.
_DETR = "fundamentalvision/Deformable-DETR README (COCO val2017, ResNet-50, 50 epochs)"
PUBLISHED = {
    "deformable-detr": PublishedModel("SenseTime/deformable-detr", "COCO 2017", {"AP": 0.445}, _DETR),
    "deformable-detr-refine": PublishedModel("SenseTime/deformable-detr-with-box-refine", "COCO 2017", {"AP": 0.462}, _DETR),
    "deformable-detr-two-stage": PublishedModel(
        "SenseTime/deformable-detr-with-box-refine-two-stage", "COCO 2017", {"AP": 0.469}, _DETR
    ),
}
