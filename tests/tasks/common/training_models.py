"""Tiny random-weight task models of every kind, and one loss over all their outputs, for the training-time
tests (activation checkpointing, torch.compile)."""
import torch
from torch import nn

from backbones import build_backbone
from backbones.pvt_v2 import DropPath
from tests.utils import perturb

KINDS = ["backbone", "segmentation", "depth", "classification", "detection", "panoptic"]
TINY = dict(depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 32, 64], num_attention_heads=[1, 2, 2, 4], mlp_ratios=[2] * 4,
            hidden_dropout_prob=0.1, drop_path_rate=0.1)


def build(kind: str) -> nn.Module:
    """The model, seeded (two calls give the same weights), with dropout and drop-path on."""
    torch.manual_seed(0)
    if kind == "backbone":
        return perturb(build_backbone("pvt_v2_b0", out_indices=(0, 1, 2, 3), **TINY))
    if kind == "segmentation":
        from tasks.segmentation.model import SegFormer

        return perturb(SegFormer("mit_b0", num_classes=5, decoder_dim=32, backbone_args=TINY))
    if kind == "depth":
        from tasks.depth.model import GLPN

        return perturb(GLPN("mit_b0", decoder_dim=16, backbone_args=TINY))
    if kind == "classification":
        from tasks.classification.model import ImageClassifier

        return perturb(ImageClassifier("pvt_v2_b0", num_classes=5, backbone_args=TINY))
    if kind == "detection":
        from tasks.detection.model import DeformableDETR

        return perturb(DeformableDETR("pvt_v2_b0", num_classes=5, num_queries=10, hidden_dim=32, nheads=2, enc_layers=2,
                                      dec_layers=2, dim_feedforward=32, backbone_args=TINY, with_box_refine=True))
    if kind == "panoptic":
        from tasks.panoptic import PanopticSegFormer

        return perturb(PanopticSegFormer("pvt_v2_b0", 3, 2, category_ids=[1, 2, 5, 10, 11], num_queries=6, hidden_dim=32,
                                         nheads=2, enc_layers=2, dec_layers=1, dim_feedforward=32, thing_mask_layers=1,
                                         stuff_mask_layers=1, backbone_args=TINY))
    raise ValueError(kind)


def no_dropout(model: nn.Module) -> nn.Module:
    """Dropout and drop-path off (a compiled graph draws its random numbers differently from eager)."""
    for m in model.modules():
        if isinstance(m, (nn.modules.dropout._DropoutNd, DropPath)):
            m.p = 0.0
        if isinstance(getattr(m, "attn_drop", None), float):  # the backbone's attention dropout is a rate
            m.attn_drop = 0.0
    return model


def outputs(out) -> list[torch.Tensor]:
    """Every floating-point tensor of a model's output (dicts by key, lists in order)."""
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in outputs(out[k])]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in outputs(v)]
    return [out] if isinstance(out, torch.Tensor) and out.is_floating_point() else []


def forward_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A loss that reaches every output: the sum of their mean squares."""
    return sum(t.float().pow(2).mean() for t in outputs(model(x)))
