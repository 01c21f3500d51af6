"""What ``SegFormer.from_pretrained`` reads: our checkpoints, Hugging Face ``SegformerForSemanticSegmentation``
folders (transformers 4.x and 5.x key names) and the original mmseg SegFormer checkpoints.

The encoder's keys are converted by the backbone (every PVTv2/MiT format); the rules below rename the decode
head's (``tasks.common.pretrained`` applies them with ``backbones.weights.RenameRules``' semantics).
"""
from __future__ import annotations

from typing import Mapping

from backbones.pvt_v2_arch import mit_from_hf_config, mit_from_state_dict
from backbones.to_transformers import hf_encoder
from backbones.weights import RenameRules
from tasks.common.pretrained import OriginalFormat, TaskWeights, class_names_from_hf, hf_num_labels
from tasks.common.to_transformers import HFModel
from tasks.common.zoo import PublishedModel

# HF 4.x (also what transformers 5.x writes), HF 5.x in memory (linear_projections), original mmseg
# (linear_c{n}, linear_fuse.conv/bn, linear_pred).
HEAD_RULES = RenameRules([
    (r"^decode_head\.(?:linear_c|linear_projections)\.(\d+)\.proj\.", r"head.linear_c.\1."),
    (r"^decode_head\.linear_c(\d)\.proj\.", lambda m: f"head.linear_c.{int(m[1]) - 1}."),
    (r"^decode_head\.linear_fuse\.conv\.", "head.linear_fuse."),
    (r"^decode_head\.linear_fuse\.bn\.", "head.bn."),
    (r"^decode_head\.linear_fuse\.", "head.linear_fuse."),
    (r"^decode_head\.batch_norm\.", "head.bn."),
    (r"^decode_head\.(?:classifier|linear_pred)\.", "head.classifier."),
])

# The way back (to_transformers): ours -> the names transformers 4.x reads and 5.x writes.
TO_HF_RULES = RenameRules([
    (r"^head\.linear_c\.(\d+)\.", r"decode_head.linear_c.\1.proj."),
    (r"^head\.linear_fuse\.", "decode_head.linear_fuse."),
    (r"^head\.bn\.", "decode_head.batch_norm."),
    (r"^head\.classifier\.", "decode_head.classifier."),
])


def config_from_hf(cfg: Mapping, source) -> dict:
    """A Hugging Face ``SegformerConfig`` (dict) -> ``SegFormer`` arguments."""
    backbone, backbone_args = mit_from_hf_config(cfg, source)
    num_classes = hf_num_labels(cfg)
    return dict(
        backbone=backbone,
        num_classes=num_classes,
        decoder_dim=cfg.get("decoder_hidden_size", 256),
        dropout=cfg.get("classifier_dropout_prob", 0.1),
        backbone_args=backbone_args,
        class_names=class_names_from_hf(cfg, num_classes),
    )


def config_from_mmseg(state_dict: Mapping, meta) -> dict:
    """An mmseg SegFormer checkpoint's architecture, read from its weight shapes."""
    backbone, backbone_args = mit_from_state_dict(state_dict)
    num_classes = state_dict["decode_head.linear_pred.weight"].shape[0]
    classes = meta.get("CLASSES") if isinstance(meta, Mapping) else None
    names = list(classes) if isinstance(classes, (list, tuple)) and len(classes) == num_classes else None
    return dict(
        backbone=backbone,
        num_classes=num_classes,
        decoder_dim=state_dict["decode_head.linear_fuse.conv.weight"].shape[0],
        backbone_args=backbone_args,
        class_names=names,
    )


def to_transformers(model) -> HFModel:
    """A SegFormer as transformers' ``SegformerForSemanticSegmentation``: any MiT or PVTv2 encoder without linear
    attention (the MLP ratios are config fields; the LayerNorm eps is transformers' own, see the notes)."""
    encoder = hf_encoder(model.backbone, "segformer")
    state = {f"segformer.{k}": v for k, v in encoder.state_dict.items()}
    state.update({TO_HF_RULES(k): v for k, v in model.state_dict().items() if k.startswith("head.")})
    config = {"model_type": "segformer", "architectures": ["SegformerForSemanticSegmentation"], **encoder.config,
              "decoder_hidden_size": model.config["decoder_dim"], "classifier_dropout_prob": model.config["dropout"],
              "semantic_loss_ignore_index": 255}
    return HFModel(config, state, "image-segmentation", "segformer", encoder.notes)


WEIGHTS = TaskWeights(
    task="segmentation",
    hf_model_types=("segformer",),
    hf_architectures=("SegformerForSemanticSegmentation",),
    config_from_hf=config_from_hf,
    head_rules=HEAD_RULES,
    originals=(
        OriginalFormat(
            "an mmseg SegFormer checkpoint (decode_head.linear_fuse.conv.*)",
            lambda sd: "decode_head.linear_fuse.conv.weight" in sd,
            config_from_mmseg,
        ),
    ),
    unused=("decode_head.conv_seg.",),  # mmseg BaseDecodeHead's classifier, never run by SegFormer
    to_transformers=to_transformers,
)

# The published checkpoints (the model zoo: short names from_pretrained accepts). Hugging Face's conversions of the
# authors' weights; the numbers are the paper's.
_SEGFORMER = "SegFormer paper (arXiv 2105.15203), single-scale"
_ADE = {"b0": (512, 0.374), "b1": (512, 0.422), "b2": (512, 0.465), "b3": (512, 0.494), "b4": (512, 0.503), "b5": (640, 0.510)}
_CITYSCAPES = {"b0": 0.762, "b1": None, "b2": None, "b3": None, "b4": None, "b5": 0.824}  # variant: mIoU (None: not verified)
PUBLISHED = {
    **{
        f"segformer-{v}-ade": PublishedModel(
            f"nvidia/segformer-{v}-finetuned-ade-{crop}-{crop}", "ADE20K", {"mIoU": miou}, _SEGFORMER
        )
        for v, (crop, miou) in _ADE.items()
    },
    **{
        f"segformer-{v}-cityscapes": PublishedModel(
            f"nvidia/segformer-{v}-finetuned-cityscapes-1024-1024", "Cityscapes",
            {"mIoU": miou} if miou is not None else {}, _SEGFORMER if miou is not None else "",
        )
        for v, miou in _CITYSCAPES.items()
    },
}
