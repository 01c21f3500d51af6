"""What ``PanopticSegFormer.from_pretrained`` reads: our checkpoints and the authors' releases
(zhiqi-li/Panoptic-SegFormer: mmcv checkpoints ``{"meta", "state_dict"}``, mmdet 2.x module names).

The backbone converts its own keys (PVTv2 in the original whai362 names, or torchvision's ResNet-50, under
``backbone.``); the rules below rename the neck and ``bbox_head`` keys, including the older names the authors'
loader renames (``.mask_head.`` → things, ``.mask_head2.`` → stuff, ``.cls_branches2.``) and a ``module.``
prefix. A release with 80 thing and 53 stuff classes predicts COCO panoptic's category ids (``COCO_PANOPTIC_IDS``).
``cls_thing_branches`` and ``reg_branches2`` exist in the release but their losses are multiplied by 0
and inference never runs them: they are dropped. The architecture is read from the weights' shapes, and the
merging thresholds from the backbone, as the authors' configs set them (``RELEASE_MERGE``).
"""
from __future__ import annotations

import re
from typing import Mapping

import torch

from backbones.pvt_v2 import variant_for
from backbones.pvt_v2_arch import arch_from_state_dict
from backbones.weights import RenameRules
from tasks.common.pretrained import OriginalFormat, TaskWeights

RESNET50_ARGS = {"norm_layer": "frozen_bn", "frozen_stages": 1}  # the authors' ResNet-50 (frozen BN, stage1 frozen)

# The merging thresholds (MergeOptions fields) the authors evaluate a release of this backbone with, where their
# config changes the defaults: configs/panformer/panformer_pvtb5_24e_coco_panoptic.py raises both quality
# thresholds to 0.3 (the ResNet configs keep 0.25 / 0.25).
RELEASE_MERGE = {"pvt_v2_b5": {"quality_threshold_things": 0.3, "quality_threshold_stuff": 0.3}}

# Backbone weights the authors' recipes start from that no hub serves, by file name: where to download them.
# pvt_v2_b5_22k.pth: PVTv2-B5 trained on ImageNet-22k, a release asset of the PVTv2 repository (whai362/PVT, release
# v2, original key names, 22k-class classifier dropped on load), what panformer_pvtb5_24e_coco_panoptic.py loads.
BACKBONE_DOWNLOADS = {"pvt_v2_b5_22k.pth": "https://github.com/whai362/PVT/releases/download/v2/pvt_v2_b5_22k.pth"}

# COCO panoptic's 133 categories in the authors' label order (panopticapi's panoptic_coco_categories.json: things
# 1-90 then stuff 92-200, by id): what a release with 80 + 53 classes predicts.
COCO_PANOPTIC_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33,
    34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61,
    62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90, 92, 93, 95,
    100, 107, 109, 112, 118, 119, 122, 125, 128, 130, 133, 138, 141, 144, 145, 147, 148, 149, 151, 154, 155,
    156, 159, 161, 166, 168, 171, 175, 176, 177, 178, 180, 181, 184, 185, 186, 187, 188, 189, 190, 191, 192,
    193, 194, 195, 196, 197, 198, 199, 200,
)
COCO_PANOPTIC_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush", "banner", "blanket", "bridge", "cardboard", "counter", "curtain",
    "door-stuff", "floor-wood", "flower", "fruit", "gravel", "house", "light", "mirror-stuff", "net", "pillow",
    "platform", "playingfield", "railroad", "river", "road", "roof", "sand", "sea", "shelf", "snow", "stairs",
    "tent", "towel", "wall-brick", "wall-stone", "wall-tile", "wall-wood", "water-other", "window-blind",
    "window-other", "tree-merged", "fence-merged", "ceiling-merged", "sky-other-merged", "cabinet-merged",
    "table-merged", "floor-other-merged", "pavement-merged", "mountain-merged", "grass-merged", "dirt-merged",
    "paper-merged", "food-other-merged", "building-other-merged", "rock-merged", "wall-other-merged",
    "rug-merged",
)

_H = "bbox_head."
_T = r"bbox_head\.transformer\."
_L = r"\.layers\.(\d+)\."
HEAD_RULES = RenameRules([
    (r"^module\.", ""),
    (r"^neck\.convs\.(\d)\.conv\.", r"head.detr.input_proj.\1.0."),
    (r"^neck\.convs\.(\d)\.gn\.", r"head.detr.input_proj.\1.1."),
    (r"^neck\.extra_convs\.0\.conv\.", "head.detr.input_proj.3.0."),
    (r"^neck\.extra_convs\.0\.gn\.", "head.detr.input_proj.3.1."),
    (rf"^{_T}level_embeds$", "head.detr.level_embed"),
    (rf"^{_T}reference_points\.", "head.detr.reference_points."),
    (rf"^{_T}encoder{_L}attentions\.0\.", r"head.detr.encoder.layers.\1.self_attn."),
    (rf"^{_T}encoder{_L}norms\.0\.", r"head.detr.encoder.layers.\1.self_attn_norm."),
    (rf"^{_T}encoder{_L}norms\.1\.", r"head.detr.encoder.layers.\1.ffn.norm."),
    (rf"^{_T}decoder{_L}attentions\.0\.attn\.", r"head.detr.decoder.layers.\1.self_attn."),
    (rf"^{_T}decoder{_L}attentions\.1\.", r"head.detr.decoder.layers.\1.cross_attn."),
    (rf"^{_T}decoder{_L}norms\.0\.", r"head.detr.decoder.layers.\1.self_attn_norm."),
    (rf"^{_T}decoder{_L}norms\.1\.", r"head.detr.decoder.layers.\1.cross_attn_norm."),
    (rf"^{_T}decoder{_L}norms\.2\.", r"head.detr.decoder.layers.\1.ffn.norm."),
    (rf"^{_T}(encoder|decoder){_L}ffns\.0\.layers\.0\.0\.", r"head.detr.\1.layers.\2.ffn.linear1."),
    (rf"^{_T}(encoder|decoder){_L}ffns\.0\.layers\.1\.", r"head.detr.\1.layers.\2.ffn.linear2."),
    (r"^bbox_head\.query_embedding\.", "head.detr.query_embed."),
    (r"^bbox_head\.cls_branches\.(\d+)\.", r"head.detr.class_embed.\1."),
    (r"^bbox_head\.reg_branches\.(\d+)\.(\d)\.", lambda m: f"head.detr.bbox_embed.{m[1]}.layers.{int(m[2]) // 2}."),
    (r"^bbox_head\.(stuff_query|cls_stuff_branches)\.", r"head.\1."),
    (r"^bbox_head\.(?:stuff_mask_head|mask_head2)\.", "head.stuff_mask_head."),
    (r"^bbox_head\.(?:things_mask_head|mask_head)\.", "head.things_mask_head."),
    (r"\.self_attention\.qkv\.(weight|bias)$", r".self_attention.in_proj_\1"),
    (r"\.self_attention\.proj\.", ".self_attention.out_proj."),
])
UNUSED = tuple(f"{m}bbox_head.{name}." for m in ("", "module.")
               for name in ("cls_thing_branches", "cls_branches2", "reg_branches2"))


def _strip(state_dict: Mapping) -> dict:
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}


def is_authors_release(state_dict: Mapping) -> bool:
    """The authors' mmdet model: ``bbox_head.query_embedding`` and ``bbox_head.stuff_query`` (any ``module.``)."""
    keys = _strip(state_dict)
    return "bbox_head.query_embedding.weight" in keys and "bbox_head.stuff_query.weight" in keys


def _count(keys, pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m[1] for k in keys if (m := regex.match(k))})


def config_from_release(state_dict: Mapping, meta) -> dict:
    """The authors' architecture from the weight shapes: classes, queries, widths, layer counts, heads (from the
    mask decoder's per-head Linear), points (from the deformable attention's weights over 4 levels)."""
    sd = _strip(state_dict)
    num_things = sd["bbox_head.cls_branches.0.weight"].shape[0]
    num_stuff, width2 = sd["bbox_head.stuff_query.weight"].shape
    things = "things_mask_head" if any(k.startswith("bbox_head.things_mask_head.") for k in sd) else "mask_head"
    stuff = "stuff_mask_head" if any(k.startswith("bbox_head.stuff_mask_head.") for k in sd) else "mask_head2"
    nheads = sd[f"bbox_head.{things}.attnen.linear_l1.0.weight"].shape[0]
    points = sd[f"{_H}transformer.encoder.layers.0.attentions.0.attention_weights.weight"].shape[0] // (nheads * 4)
    if "backbone.layer1.0.conv1.weight" in sd:
        backbone, backbone_args = "resnet50", dict(RESNET50_ARGS)
    else:
        arch = arch_from_state_dict({k: v for k, v in sd.items() if k.startswith("backbone.")})
        backbone, backbone_args = variant_for(arch)
    coco = (num_things, num_stuff) == (80, 53)
    names = (meta or {}).get("CLASSES") if isinstance(meta, Mapping) else None
    names = tuple(names) if names is not None and len(names) == num_things + num_stuff else None
    names = COCO_PANOPTIC_NAMES if names is None and coco else names
    return dict(
        backbone=backbone, backbone_args=backbone_args,
        num_things_classes=num_things, num_stuff_classes=num_stuff,
        num_queries=sd["bbox_head.query_embedding.weight"].shape[0], hidden_dim=width2 // 2, nheads=nheads,
        enc_layers=_count(sd, rf"^{_T}encoder\.layers\.(\d+)\."),
        dec_layers=_count(sd, rf"^{_T}decoder\.layers\.(\d+)\."),
        dim_feedforward=sd[f"{_H}transformer.encoder.layers.0.ffns.0.layers.0.0.weight"].shape[0], n_points=points,
        thing_mask_layers=_count(sd, rf"^bbox_head\.{things}\.blocks\.(\d+)\."),
        stuff_mask_layers=_count(sd, rf"^bbox_head\.{stuff}\.blocks\.(\d+)\."),
        class_names=names, category_ids=COCO_PANOPTIC_IDS if coco else None,
        merge=dict(RELEASE_MERGE.get(backbone, {})),
    )


def finish(out: dict, origin: dict, model) -> None:
    """mmdet's ResNet saves BatchNorm's ``num_batches_tracked`` counters; the authors' frozen BN (ours:
    ``FrozenBatchNorm2d``) has none, and a counter is no weight: drop those the model lacks."""
    have = model.state_dict()
    for key in [k for k in out if k.endswith(".num_batches_tracked") and k not in have]:
        del out[key], origin[key]


def _no_hf_config(cfg: Mapping, source) -> dict:
    raise ValueError(f"{source}: Hugging Face has no Panoptic SegFormer class; expected our checkpoint or the authors' release")


WEIGHTS = TaskWeights(
    task="panoptic",
    hf_model_types=(),
    hf_architectures=(),
    config_from_hf=_no_hf_config,
    head_rules=HEAD_RULES,
    originals=(OriginalFormat("an authors' Panoptic SegFormer release (zhiqi-li/Panoptic-SegFormer, mmcv)",
                              is_authors_release, config_from_release),),
    unused=UNUSED,
    finish=finish,
)


def dropped_keys(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """The release's keys that are not loaded (never run by the network): see the module docstring."""
    return sorted(k for k in state_dict if k.startswith(UNUSED))
