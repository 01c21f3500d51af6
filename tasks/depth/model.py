"""GLPN (Kim et al., 2022): a registered backbone's four stages into the GLPN decoder, depth in metres at the
input size.

What ``GLPN.from_pretrained`` reads (ours, Hugging Face, GLPDepth) is declared in ``weights.py``.
"""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np
import torch

from heads.glpn_head import GLPNHead
from backbones.base import STAGE_NAMES as STAGES
from tasks.common.model import TaskModel
from tasks.common.preprocess import Preprocessing, check_image

from .weights import WEIGHTS


class GLPN(TaskModel):
    """``forward(pixel_values: Tensor[B, 3, H, W]) -> Tensor[B, 1, H, W]`` depth in metres, in (0, max_depth).

    ``pixel_values`` are RGB in [0, 1] with no mean/std normalisation (GLPN's input: ``model.preprocessing``
    has mean 0, std 1). Any H, W the backbone accepts work; for MiT/PVTv2 the decoder's
    ``4 ceil(H/4) x 4 ceil(W/4)`` map is cropped to H x W, which equals Hugging Face's output (cropped)
    wherever Hugging Face accepts the size.
    """

    task = "depth"
    weights_spec = WEIGHTS
    default_preprocessing = Preprocessing(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # full resolution

    def __init__(
        self,
        backbone: str = "mit_b4",
        *,
        max_depth: float = 10.0,
        decoder_dim: int = 64,
        backbone_args: Mapping | None = None,
        backbone_weights: str | os.PathLike | None = None,
        preprocessing: Preprocessing | Mapping | None = None,
    ):
        super().__init__(
            backbone, out_features=STAGES, backbone_args=backbone_args, backbone_weights=backbone_weights,
            preprocessing=preprocessing,
        )
        self.head = GLPNHead(self.in_channels, decoder_dim=decoder_dim, max_depth=max_depth)
        self._set_config(max_depth=self.head.max_depth, decoder_dim=decoder_dim)

    @property
    def max_depth(self) -> float:
        return self.head.max_depth

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixel_values), size=pixel_values.shape[-2:])

    def predict(self, image: np.ndarray, *, flip: bool = False) -> np.ndarray:
        """Depth ``float32 [H, W]`` in metres for ``image[H, W, 3]`` uint8 RGB (see ``inference.predict_depth``)."""
        from .inference import predict_depth

        check_image(image)
        p = self.preprocessing
        if p.resize != "none":
            raise ValueError(f"GLPN.predict: predicts at full resolution (resize='none'), got resize={p.resize!r}")
        return predict_depth(self, image, flip=flip, mean=p.mean, std=p.std)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, max_depth: float | None = None, **backbone_args) -> "GLPN":
        """As ``TaskModel.from_pretrained``; ``max_depth`` replaces the stored one (an original GLPDepth
        checkpoint does not store it: 10 (NYU) unless given, 80 for the KITTI checkpoint)."""
        overrides = {} if max_depth is None else {"max_depth": max_depth}
        return cls._load_pretrained(path, backbone_args, **overrides)
