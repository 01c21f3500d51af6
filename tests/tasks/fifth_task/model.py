"""``ForegroundNet``: a registered backbone's stride-4 map and a 1x1 convolution -> foreground logits."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from backbones.weights import RenameRules
from tasks.common.model import TaskModel
from tasks.common.preprocess import Preprocessing
from tasks.common.pretrained import TaskWeights


def _no_hf_config(cfg: Mapping, source) -> dict:
    raise ValueError(f"{source}: no Hugging Face model is a foreground model")


WEIGHTS = TaskWeights(task="foreground", hf_model_types=(), hf_architectures=(), config_from_hf=_no_hf_config,
                      head_rules=RenameRules([]))


class ForegroundNet(TaskModel):
    """``forward(pixel_values[B, 3, H, W]) -> logits[B, 1, H/4, W/4]``; ``predict`` gives a bool mask [H, W]."""

    task = "foreground"
    weights_spec = WEIGHTS
    default_preprocessing = Preprocessing()

    def __init__(self, backbone: str = "pvt_v2_b0", *, backbone_args: Mapping | None = None,
                 backbone_weights: str | None = None, preprocessing: Preprocessing | Mapping | None = None):
        super().__init__(backbone, out_features=("stage1",), backbone_args=backbone_args,
                         backbone_weights=backbone_weights, preprocessing=preprocessing)
        self.head = nn.Conv2d(self.in_channels[0], 1, 1)
        self._set_config()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixel_values)[0])

    def predict(self, image: np.ndarray, *, flip: bool = False) -> np.ndarray:
        x = self.preprocessing(image).to(self.device)
        logits = self(x)
        if flip:
            logits = 0.5 * (logits + self(x.flip(-1)).flip(-1))
        logits = F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False)
        return (logits[0, 0] > 0).cpu().numpy()
