"""Image classification on a PVTv2 / MiT backbone (Wang et al., 2022): the last stage's tokens (after the stage's
LayerNorm) averaged over positions, then one linear layer — what the original ``PyramidVisionTransformerV2``,
timm's ``forward_head`` and Hugging Face's ``PvtV2ForImageClassification`` / ``SegformerForImageClassification``
all compute. What ``from_pretrained`` reads is declared in ``weights.py``.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from heads.precision import float32
from tasks.common.model import TaskModel
from tasks.common.preprocess import Preprocessing

from .weights import WEIGHTS


class ImageClassifier(TaskModel):
    """``forward(pixel_values: Tensor[B, 3, H, W]) -> Tensor[B, K]`` logits, for any H, W the backbone takes.

    ``pixel_values`` are ``(rgb / 255 - mean) / std`` (``model.preprocessing``: by default DeiT's evaluation,
    short side to 256 bicubic, centre crop 224, ImageNet mean/std). ``dropout`` is applied to the pooled
    features before the head (0 in the PVTv2 recipe).
    """

    task = "classification"
    weights_spec = WEIGHTS
    default_preprocessing = Preprocessing(resize="short_side_crop", size=(256, 224), interpolation="bicubic")

    def __init__(
        self,
        backbone: str = "pvt_v2_b2",
        num_classes: int = 1000,
        *,
        dropout: float = 0.0,
        backbone_args: Mapping | None = None,
        backbone_weights: str | os.PathLike | None = None,
        class_names: Sequence[str] | None = None,
        preprocessing: Preprocessing | Mapping | None = None,
    ):
        super().__init__(
            backbone, out_features=("stage4",), backbone_args=backbone_args, backbone_weights=backbone_weights,
            num_classes=num_classes, class_names=class_names, preprocessing=preprocessing,
        )
        self.head_drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.in_channels[-1], num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)  # the original code's and timm's initialisation
        nn.init.zeros_(self.head.bias)
        self._set_config(dropout=dropout)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        (last,) = self.features(pixel_values)  # [B, C, h, w], already layer-normed by the stage
        return float32(self.head(self.head_drop(last.mean(dim=(2, 3)))))  # float32 under autocast too

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Class probabilities ``float32 [K]`` (softmax of the logits) for ``image[H, W, 3]`` uint8 RGB."""
        pixel_values = self.preprocessing(image).to(self.device)
        return torch.softmax(self(pixel_values).float(), dim=-1)[0].cpu().numpy()
