"""Deformable DETR (Zhu et al., 2021) on a registered backbone (stage2-4, or stage4 for single-scale).

Batch invariance: the backbone and ``input_proj`` (convolutions with zero padding, GroupNorm statistics
over the whole map) see padding, so a padded image would not give the features it gives alone. The model
therefore runs them on each group of same-sized images without padding, then pads the projected maps into
one batch with exact per-level masks; the transformer is exactly mask-respecting from there on. A batch of
same-sized images (or no ``pixel_mask``) is a single group: one backbone pass, as usual. In training
(unless ``batch_invariant_training``) a padded batch takes one backbone pass, as in DETR and Hugging Face:
multi-scale training makes every image a different size, and B batch-1 passes cost far more.

What ``DeformableDETR.from_pretrained`` reads (ours, Hugging Face) is declared in ``weights.py``.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from heads.deformable_detr import DeformableDETRConfig, DeformableDETRHead
from heads.deformable_detr.ms_deform_attn import MSDeformAttn, set_sampler
from tasks.common.model import TaskModel
from tasks.common.preprocess import Preprocessing

from .weights import RESNET50_ARGS, WEIGHTS

class DeformableDETR(TaskModel):
    """``forward(pixel_values[B, 3, H, W], pixel_mask[B, H, W] | None) -> dict``:

    - ``pred_logits[B, Q, K]`` (sigmoid scores; no "no object" class) and ``pred_boxes[B, Q, 4]``
      (cx, cy, w, h) normalised to each image's unpadded size;
    - ``aux_outputs``: a list of such dicts, one per decoder layer but the last (auxiliary losses);
    - two-stage only, ``enc_outputs``: ``pred_logits[B, S, K]``, ``pred_boxes[B, S, 4]`` for the S encoder
      tokens (the proposal loss against class-agnostic targets).

    ``pixel_values`` are ``(rgb / 255 - mean) / std`` with ImageNet's mean/std (``model.preprocessing``).
    ``pixel_mask`` is 1 on real pixels; each image's real pixels must be its top-left rectangle (bottom/right
    padding). In evaluation, results for an image do not depend on the rest of the batch (see the module
    docstring); training runs a padded batch through one backbone call (``batch_invariant_training``).
    ``**head`` are the head's hyper-parameters, the fields of ``DeformableDETRConfig`` (``num_queries``,
    ``hidden_dim``, ``with_box_refine``, ...; its defaults for the rest): declared there once, stored flat in
    ``model.config`` (our checkpoints). ``backbone_stages`` are the backbone maps the transformer reads (default
    stage2-4, or stage4 when ``num_feature_levels`` is 1, i.e. single-scale); levels beyond them come from
    stride-2 convs.
    ``backbone_args`` None means frozen BN with the stem and stage1 frozen for ``resnet50``.
    ``class_names``: one per class index (COCO's 91 raw ids: "N/A" or "" where an id has no category).
    """

    task = "detection"
    weights_spec = WEIGHTS
    head_config = DeformableDETRConfig
    default_preprocessing = Preprocessing(resize="short_side", size=(800, 1333))  # DETR's evaluation size
    default_backbone_args = {"resnet50": RESNET50_ARGS}
    # Training runs a padded batch through one backbone call unless this is set True (on the class or
    # a model): then training, like evaluation, runs the backbone once per distinct image size.
    batch_invariant_training: bool = False
    # The model section's loss weights and matching costs: read by DetectionTask (the criterion), not the model.
    options_not_passed = ("weights", "cls_loss_coef", "bbox_loss_coef", "giou_loss_coef", "aux_loss",
                          "set_cost_class", "set_cost_bbox", "set_cost_giou", "focal_alpha")

    def __init__(
        self,
        backbone: str = "resnet50",
        num_classes: int = DeformableDETRConfig.num_classes,
        *,
        backbone_stages: Sequence[str] | None = None,
        backbone_args: Mapping | None = None,
        backbone_weights: str | os.PathLike | None = None,
        class_names: Sequence[str] | None = None,
        preprocessing: Preprocessing | Mapping | None = None,
        **head,
    ):
        config = self.head_options(num_classes=num_classes, **head)
        levels = config.num_feature_levels
        if levels != 1 and levels < 3:
            raise ValueError(f"DeformableDETR: num_feature_levels must be 1 or >= 3 (stage2-4 + extra), got {levels}")
        if backbone_stages is None:
            backbone_stages = ("stage4",) if levels == 1 else ("stage2", "stage3", "stage4")
        super().__init__(
            backbone, out_features=tuple(backbone_stages), backbone_args=backbone_args,
            backbone_weights=backbone_weights, num_classes=num_classes, class_names=class_names,
            preprocessing=preprocessing,
        )
        self.head = DeformableDETRHead(self.in_channels, config)
        arch = {k: v for k, v in dataclasses.asdict(config).items() if k != "num_classes"}  # _set_config adds it
        self._set_config(**arch, backbone_stages=tuple(self.backbone.out_features))

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None) -> dict:
        sizes = image_sizes(pixel_values, pixel_mask, type(self).__name__)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, size in enumerate(sizes):
            groups.setdefault(size, []).append(i)
        if len(groups) == 1 and sizes[0] == tuple(pixel_values.shape[-2:]):  # nothing padded: one plain batch
            sources = self._project(pixel_values)
            return self.head(sources, [s.new_zeros(s.shape[0], *s.shape[-2:], dtype=torch.bool) for s in sources])
        if self.training and not self.batch_invariant_training:
            return self._forward_padded(pixel_values, sizes)
        per_group = {}
        for (h, w), index in groups.items():
            per_group[(h, w)] = self._project(pixel_values[index, :, :h, :w])
        B = pixel_values.shape[0]
        sources, masks = [], []
        for level in range(self.head.num_feature_levels):
            maps = {size: srcs[level] for size, srcs in per_group.items()}
            H = max(m.shape[-2] for m in maps.values())
            W = max(m.shape[-1] for m in maps.values())
            first = next(iter(maps.values()))
            source = first.new_zeros(B, first.shape[1], H, W)
            mask = torch.ones(B, H, W, dtype=torch.bool, device=first.device)
            for size, m in maps.items():
                index = torch.tensor(groups[size], device=first.device)
                h, w = m.shape[-2:]
                source[index, :, :h, :w] = m
                mask[index, :h, :w] = False
            sources.append(source)
            masks.append(mask)
        return self.head(sources, masks)

    def parameter_groups(self) -> dict[str, list[nn.Module]]:
        """Modules the Deformable-DETR recipe trains at its own learning rate (x0.1): the deformable
        attention's sampling offsets and the query reference points (absent in two-stage models)."""
        offsets = [m.sampling_offsets for m in self.modules() if isinstance(m, MSDeformAttn)]
        reference = getattr(self.head, "reference_points", None)
        return {"sampling_offsets": offsets, "reference_points": [reference] if isinstance(reference, nn.Module) else []}

    def export_forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pred_logits, pred_boxes)`` of the unpadded path: a graph cannot hold the per-size grouping that a
        ``pixel_mask`` needs, so an exported detector takes same-sized, unpadded images (it is batch-invariant)."""
        sources = self._project(pixel_values)
        out = self.head(sources, [s.new_zeros(s.shape[0], *s.shape[-2:], dtype=torch.bool) for s in sources])
        return out["pred_logits"], out["pred_boxes"]

    def for_export(self, sampler: str | None = None) -> "DeformableDETR":
        """A copy whose deformable attention samples with ``sampler`` (``"gather"``: no GridSample, for TensorRT;
        default ``"grid_sample"``, the reference)."""
        return set_sampler(copy.deepcopy(self), sampler or "grid_sample")

    def _forward_padded(self, pixel_values: torch.Tensor, sizes: list[tuple[int, int]]) -> dict:
        """One backbone call on the padded batch, as DETR and Hugging Face train: the padding mask is resized
        to each level (nearest). Multi-scale training gives every image its own size, so the exact path
        would cost one batch-1 backbone call per image; padding changes features only near the padding."""
        sources = self._project(pixel_values)
        return self.head(sources, padding_masks(sizes, pixel_values, sources))

    def _project(self, images: torch.Tensor) -> list[torch.Tensor]:
        features = self.backbone(images)
        return self.head.project([features[name] for name in self.backbone.out_features])

    def predict(self, image: np.ndarray, *, threshold: float = 0.0) -> dict[str, torch.Tensor]:
        """Detections for ``image[H, W, 3]`` uint8 RGB: ``boxes[N, 4]`` (x0, y0, x1, y1 in the image's pixels),
        ``scores[N]``, ``labels[N]`` (class indices), the top 100 over queries x classes scoring >= ``threshold``."""
        from .inference import post_process

        x = self.preprocessing(image).to(self.device)
        result = post_process(self(x), torch.tensor([image.shape[:2]], device=x.device))[0]
        keep = result["scores"] >= threshold
        return {k: v[keep].cpu() for k, v in result.items()}


def image_sizes(pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None, who: str) -> list[tuple[int, int]]:
    """Each image's real (h, w), checking that the real pixels are its top-left rectangle; an error begins with
    ``who``, the model whose input it is."""
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.dim() != 4 or pixel_values.shape[0] == 0:
        got = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
        raise ValueError(f"{who}: pixel_values must be a Tensor[B, C, H, W] with B >= 1, got {got}")
    B, _, H, W = pixel_values.shape
    if pixel_mask is None:
        return [(H, W)] * B
    if tuple(pixel_mask.shape) != (B, H, W):
        raise ValueError(f"{who}: pixel_mask must be [B, H, W] = {(B, H, W)}, got {tuple(pixel_mask.shape)}")
    real = pixel_mask.bool()
    h, w = real.any(2).sum(1), real.any(1).sum(1)
    rows = torch.arange(H, device=real.device)[None, :, None] < h[:, None, None]
    cols = torch.arange(W, device=real.device)[None, None, :] < w[:, None, None]
    if not torch.equal(rows & cols, real) or bool((h == 0).any()):
        raise ValueError(f"{who}: each pixel_mask must be 1 on a non-empty top-left rectangle, 0 elsewhere")
    return list(zip(h.tolist(), w.tolist()))


def padding_masks(sizes: Sequence[tuple[int, int]], pixel_values: torch.Tensor,
                  sources: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The padding (True) of each map in ``sources`` for a padded batch ``pixel_values[B, 3, H, W]`` whose images
    are ``sizes`` (their real (h, w)): each image's real region resized (nearest) to the map's size."""
    valid = torch.zeros(pixel_values.shape[0], *pixel_values.shape[-2:], device=pixel_values.device)
    for i, (h, w) in enumerate(sizes):
        valid[i, :h, :w] = 1
    return [F.interpolate(valid[None], size=s.shape[-2:])[0] == 0 for s in sources]
