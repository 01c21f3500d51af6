"""Backbones: ``build_backbone(name, ...)`` returns an ``nn.Module`` mapping images to stage features."""
from . import pvt_v2, resnet  # noqa: F401  (registers the variants)
from .base import Backbone
from .pvt_v2 import PVTv2, PVTv2Config
from .registry import build_backbone, list_backbones, register_backbone
from .resnet import ResNet
from .weights import load_backbone_weights, read_state_dict, save_backbone_weights

__all__ = [
    "Backbone",
    "PVTv2",
    "PVTv2Config",
    "ResNet",
    "build_backbone",
    "list_backbones",
    "load_backbone_weights",
    "read_state_dict",
    "register_backbone",
    "save_backbone_weights",
]
