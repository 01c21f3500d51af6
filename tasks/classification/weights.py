"""What ``ImageClassifier.from_pretrained`` reads, head included (the backbone loader drops it; here it is the point):

- our checkpoints (``tools/train.py``) and ``config.json`` folders;
- Hugging Face ``PvtV2ForImageClassification`` (``OpenGVLab/pvt_v2_*``) and ``SegformerForImageClassification``
  (``nvidia/mit-b*``) folders, transformers 4.x and 5.x key names (``classifier.*``);
- timm hub folders (``config.json`` with ``architecture``, e.g. ``timm/pvt_v2_b1.in1k``; ``head.*``);
- the original whai362/PVT ``.pth`` release (``patch_embed1`` ..., ``head.*``) and bare timm state dicts, whose
  architecture is read from the weight shapes.

The backbone converts the encoder's keys (every PVTv2/MiT format); ``HEAD_RULES`` rename the classifier.
Class names: ``id2label`` (or timm's ``label_names``); a 1000-class head without names gets ImageNet's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from backbones.pvt_v2 import MIT_VARIANTS, PVT_V2_VARIANTS, PVTv2Config, mit_from_hf_config
from backbones.pvt_v2_weights import convert_pvt_v2_state_dict, detect_pvt_v2_format
from backbones.weights import RenameRules
from tasks.common.preprocess import Preprocessing
from tasks.common.pretrained import OriginalFormat, TaskWeights, class_names_from_hf, hf_num_labels

from .datasets import imagenet_classes

HEAD_RULES = RenameRules([(r"^classifier\.", "head.")])  # Hugging Face; ours, timm and original are head.*

# Hugging Face PvtV2Config defaults (config.json leaves defaults out); the PVTv2Config knobs of the same name.
HF_PVT_V2_DEFAULTS = dict(
    num_channels=3, depths=[2, 2, 2, 2], hidden_sizes=[32, 64, 160, 256], num_attention_heads=[1, 2, 5, 8],
    mlp_ratios=[8, 8, 4, 4], sr_ratios=[8, 4, 2, 1], patch_sizes=[7, 3, 3, 3], strides=[4, 2, 2, 2],
    hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, drop_path_rate=0.0,
    qkv_bias=True, linear_attention=False,
)
_VARIANT_DEFAULTS = dict(mlp_ratios=(8, 8, 4, 4), linear_attention=False)


def class_names_for(num_classes: int, names) -> tuple[str, ...] | None:
    """``names`` if they are real names for ``num_classes``; else ImageNet's when the head has 1000 classes."""
    if names is not None and len(names) == num_classes:
        return tuple(str(n) for n in names)
    return imagenet_classes()[1] if num_classes == 1000 else None


def variant_for(arch: Mapping) -> tuple[str, dict]:
    """``(registered variant, overrides)`` that build ``arch`` (PVTv2Config fields): the first PVTv2 or MiT variant
    that matches its hidden sizes, depths, MLP ratios and attention kind; failing that, its sizes and depths; then
    its sizes, MLP ratios and attention kind (a variant with other depths); else pvt_v2_b0. The overrides are the
    fields where ``arch`` differs from the variant."""
    arch = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in arch.items()}
    variants = {n: {**_VARIANT_DEFAULTS, **a} for n, a in {**PVT_V2_VARIANTS, **MIT_VARIANTS}.items()}
    tries = (("hidden_sizes", "depths", "mlp_ratios", "linear_attention"), ("hidden_sizes", "depths"),
             ("hidden_sizes", "mlp_ratios", "linear_attention"))
    fits = [n for keys in tries for n, a in variants.items() if all(a[k] == arch.get(k, a[k]) for k in keys)]
    name = (fits or ["pvt_v2_b0"])[0]
    base = PVTv2Config(**variants[name])
    return name, {k: v for k, v in arch.items() if getattr(base, k) != v}


def config_from_hf(cfg: Mapping, source: Path) -> dict:
    """A Hugging Face ``PvtV2Config`` or ``SegformerConfig`` (dict) -> ``ImageClassifier`` arguments."""
    num_classes = hf_num_labels(cfg)
    if cfg.get("model_type") == "segformer":
        backbone, args = mit_from_hf_config(cfg, source)
    else:
        if cfg.get("num_encoder_blocks", 4) != 4:
            raise ValueError(f"{source}: num_encoder_blocks={cfg['num_encoder_blocks']} is not supported: our encoders have 4 stages")
        backbone, args = variant_for({k: cfg.get(k, v) for k, v in HF_PVT_V2_DEFAULTS.items()})
        eps = cfg.get("layer_norm_eps", 1e-6)  # Hugging Face's PvtV2 uses it in every LayerNorm
        args.update(layer_norm_eps=eps, embed_layer_norm_eps=eps)
    return dict(
        backbone=backbone, num_classes=num_classes, backbone_args=args,
        class_names=class_names_for(num_classes, class_names_from_hf(cfg, num_classes)),
    )


def config_from_timm(cfg: Mapping, source: Path) -> dict:
    """A timm hub ``config.json`` (``architecture``, ``num_classes``, ``pretrained_cfg``) -> our arguments; timm's
    LayerNorm eps scheme is the original one, our default. Its ``crop_pct`` becomes the preprocessing."""
    name = cfg["architecture"]
    if name not in PVT_V2_VARIANTS:
        raise ValueError(f"{source}: timm architecture {name!r} is not a PVTv2 variant ({', '.join(PVT_V2_VARIANTS)})")
    pretrained = cfg.get("pretrained_cfg") or {}
    num_classes = cfg.get("num_classes", pretrained.get("num_classes", 1000))
    if not num_classes:
        raise ValueError(f"{source}: num_classes is 0 (a timm feature extractor without a head)")
    crop_pct, size = pretrained.get("crop_pct", 0.9), pretrained.get("input_size", (3, 224, 224))[-1]
    preprocessing = Preprocessing(
        mean=tuple(pretrained.get("mean", Preprocessing.mean)), std=tuple(pretrained.get("std", Preprocessing.std)),
        resize="short_side_crop", size=(int(size / crop_pct), size),
        interpolation=pretrained.get("interpolation", "bicubic"),
    )
    return dict(backbone=name, num_classes=num_classes, backbone_args={},
                class_names=class_names_for(num_classes, cfg.get("label_names")), preprocessing=preprocessing)


def is_headed_release(state_dict: Mapping) -> bool:
    """An original whai362/PVT release or a bare timm state dict: a PVTv2 encoder at the root and ``head.weight``."""
    try:
        fmt, prefix = detect_pvt_v2_format(list(state_dict))
    except ValueError:
        return False
    return fmt in ("original", "timm") and prefix == "" and "head.weight" in state_dict


def config_from_weights(state_dict: Mapping, meta) -> dict:
    """The architecture of an original/timm release, read from its weight shapes (heads and strides are PVTv2's,
    not stored)."""
    sd = convert_pvt_v2_state_dict(state_dict).state_dict
    arch: dict = dict(hidden_sizes=[], depths=[], mlp_ratios=[], sr_ratios=[], patch_sizes=[])
    for i in range(1, 5):
        fc1, proj = sd[f"stage{i}.blocks.0.mlp.fc1.weight"], sd[f"stage{i}.patch_embed.proj.weight"]
        arch["hidden_sizes"].append(fc1.shape[1])
        arch["mlp_ratios"].append(fc1.shape[0] // fc1.shape[1])
        arch["depths"].append(len({k.split(".")[2] for k in sd if k.startswith(f"stage{i}.blocks.")}))
        arch["patch_sizes"].append(proj.shape[-1])
        sr = sd.get(f"stage{i}.blocks.0.attn.sr.weight")
        arch["sr_ratios"].append(1 if sr is None or sr.shape[-1] == 1 else sr.shape[-1])
    # Linear SRA pools to 7x7 then has a 1x1 "sr" conv in every stage, the last one included.
    arch["linear_attention"] = "stage4.blocks.0.attn.sr.weight" in sd
    if arch["linear_attention"]:
        arch["sr_ratios"] = list(PVTv2Config().sr_ratios)
    arch["num_channels"] = sd["stage1.patch_embed.proj.weight"].shape[1]
    num_classes = state_dict["head.weight"].shape[0]
    backbone, args = variant_for(arch)
    return dict(backbone=backbone, num_classes=num_classes, backbone_args=args, class_names=class_names_for(num_classes, None))


WEIGHTS = TaskWeights(
    task="classification",
    hf_model_types=("pvt_v2", "segformer"),
    hf_architectures=("PvtV2ForImageClassification", "SegformerForImageClassification"),
    config_from_hf=config_from_hf,
    head_rules=HEAD_RULES,
    originals=(
        OriginalFormat("an original whai362/PVT or timm PVTv2 state dict with its head.*", is_headed_release,
                       config_from_weights),
    ),
    config_from_timm=config_from_timm,
)
