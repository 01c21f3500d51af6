"""SegFormer (Xie et al., 2021): a registered backbone's four stages into the all-MLP decoder, logits at stride 4.

What ``SegFormer.from_pretrained`` reads (ours, Hugging Face, mmseg) is declared in ``weights.py``.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
import torch

from heads.segformer_head import SegFormerHead
from backbones.base import STAGE_NAMES as STAGES
from tasks.common.model import TaskModel
from tasks.common.preprocess import Preprocessing, check_image

from .weights import WEIGHTS

_SMALL_BACKBONES = ("mit_b0", "mit_b1", "pvt_v2_b0", "pvt_v2_b1")  # decoder width 256; all others 768


class SegFormer(TaskModel):
    """``forward(pixel_values: Tensor[B, 3, H, W]) -> Tensor[B, K, H/4, W/4]`` logits.

    ``pixel_values`` are ``(rgb / 255 - mean) / std`` with ImageNet's mean/std (``model.preprocessing``).
    The logits' size is that of the backbone's stride-4 stage (``floor((n - 1) / 4) + 1`` for MiT/PVTv2).
    ``decoder_dim`` None means 256 for b0/b1-sized backbones and 768 otherwise (the paper's choice).
    """

    task = "segmentation"
    weights_spec = WEIGHTS
    # The ADE20K evaluation: keep-ratio resize to (2048, 512), sides rounded up to multiples of 32.
    default_preprocessing = Preprocessing(resize="keep_ratio", size=(2048, 512), size_divisor=32)

    def __init__(
        self,
        backbone: str = "mit_b0",
        num_classes: int = 150,
        *,
        decoder_dim: int | None = None,
        dropout: float = 0.1,
        backbone_args: Mapping | None = None,
        backbone_weights: str | os.PathLike | None = None,
        class_names: Sequence[str] | None = None,
        preprocessing: Preprocessing | Mapping | None = None,
    ):
        super().__init__(
            backbone, out_features=STAGES, backbone_args=backbone_args, backbone_weights=backbone_weights,
            num_classes=num_classes, class_names=class_names, preprocessing=preprocessing,
        )
        if decoder_dim is None:
            decoder_dim = 256 if backbone in _SMALL_BACKBONES else 768
        self.head = SegFormerHead(self.in_channels, num_classes, embed_dim=decoder_dim, dropout=dropout)
        self._set_config(decoder_dim=decoder_dim, dropout=dropout)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixel_values))

    def predict(self, image: np.ndarray, *, ratios: Sequence[float] = (1.0,), flip: bool = False, mode: str = "whole",
                crop=None, stride=None) -> np.ndarray:
        """Label map ``int64 [H, W]`` for ``image[H, W, 3]`` uint8 RGB at its own size (see ``inference.predict``:
        multi-scale ``ratios``, ``flip``, sliding windows with ``mode="slide"``)."""
        from .inference import predict

        check_image(image)
        p = self.preprocessing
        if p.resize != "keep_ratio":
            raise ValueError(f"SegFormer.predict: expects a keep_ratio preprocessing, got resize={p.resize!r}")
        return predict(
            self, image, mean=[255 * m for m in p.mean], std=[255 * s for s in p.std], scale=p.size, ratios=ratios,
            flip=flip, mode=mode, crop=crop, stride=stride,
        )
