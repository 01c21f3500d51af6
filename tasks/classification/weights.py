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

from backbones import hub
from backbones.pvt_v2 import PVT_V2_VARIANTS, variant_for
from backbones.pvt_v2_arch import arch_from_state_dict, mit_from_hf_config, pvt_v2_from_hf_config
from backbones.pvt_v2_keys import detect_pvt_v2_format
from backbones.to_transformers import hf_encoder
from backbones.weights import RenameRules
from tasks.common.preprocess import Preprocessing
from tasks.common.pretrained import OriginalFormat, TaskWeights, class_names_from_hf, hf_num_labels
from tasks.common.to_transformers import HFModel
from tasks.common.zoo import PublishedModel

from .datasets import imagenet_classes

HEAD_RULES = RenameRules([(r"^classifier\.", "head.")])  # Hugging Face; ours, timm and original are head.*
TO_HF_RULES = RenameRules([(r"^head\.", "classifier.")])  # the way back (to_transformers)

def class_names_for(num_classes: int, names) -> tuple[str, ...] | None:
    """``names`` if they are real names for ``num_classes``; else ImageNet's when the head has 1000 classes."""
    if names is not None and len(names) == num_classes:
        return tuple(str(n) for n in names)
    return imagenet_classes()[1] if num_classes == 1000 else None


def config_from_hf(cfg: Mapping, source: Path) -> dict:
    """A Hugging Face ``PvtV2Config`` or ``SegformerConfig`` (dict) -> ``ImageClassifier`` arguments."""
    num_classes = hf_num_labels(cfg)
    if cfg.get("model_type") == "segformer":
        backbone, args = mit_from_hf_config(cfg, source)
    else:
        backbone, args = pvt_v2_from_hf_config(cfg, source)
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
    arch = arch_from_state_dict(state_dict)
    num_classes = state_dict["head.weight"].shape[0]
    backbone, args = variant_for(arch)
    return dict(backbone=backbone, num_classes=num_classes, backbone_args=args, class_names=class_names_for(num_classes, None))


def to_transformers(model) -> HFModel:
    """Any PVTv2/MiT classifier as transformers' ``PvtV2ForImageClassification`` (mean of the last stage's tokens,
    then a linear layer: the same head)."""
    encoder = hf_encoder(model.backbone, "pvt_v2")
    state = {f"pvt_v2.{k}": v for k, v in encoder.state_dict.items()}
    state.update({TO_HF_RULES(k): v for k, v in model.state_dict().items() if k.startswith("head.")})
    config = {"model_type": "pvt_v2", "architectures": ["PvtV2ForImageClassification"], **encoder.config}
    return HFModel(config, state, "image-classification", "clip", encoder.notes)


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
    to_transformers=to_transformers,
)

# The published checkpoints (the model zoo: short names from_pretrained accepts); the numbers are the authors'.
_PVT = "whai362/PVT README (ImageNet-1K val, 224x224)"
_PVT_TOP1 = {"b0": 0.705, "b1": 0.787, "b2": 0.820, "b2_li": 0.821, "b3": 0.831, "b4": 0.836, "b5": 0.838}
PUBLISHED = {
    **{
        f"pvt_v2_{v}": PublishedModel(hub.IMAGENET_WEIGHTS[f"pvt_v2_{v}"], "ImageNet-1K", {"top1": top1}, _PVT)
        for v, top1 in _PVT_TOP1.items()
    },
    **{f"mit_b{i}": PublishedModel(f"nvidia/mit-b{i}", "ImageNet-1K") for i in range(6)},
}
