"""Panoptic SegFormer (Li et al., CVPR 2022) on a registered backbone (stage2-4: strides 8/16/32).

The network (``heads.panoptic_segformer``) is the authors': 1x1 conv + GroupNorm projections and a stride-64
level, the deformable encoder, the location decoder (box refinement, 2-d reference points), the mask decoder
(thing queries = the location decoder's last outputs, one query per stuff class, masks from attention maps).
``inference.py`` merges its masks into a panoptic map. What ``from_pretrained`` reads is in ``weights.py``.

Padding: a padded batch runs through the backbone once with the padding mask resized to every level (as
Deformable DETR trains); the projections' GroupNorm and the convolutions see the padding, so an image's result
matches its unpadded result only approximately. Evaluation and ``predict`` run one image at a time (exact).
"""
from __future__ import annotations

import copy
import dataclasses
import os
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from heads.deformable_detr.ms_deform_attn import MSDeformAttn, set_sampler
from heads.panoptic_segformer import PanopticSegFormerConfig, PanopticSegFormerHead
from tasks.common.model import TaskModel
from tasks.common.preprocess import Preprocessing
from tasks.common.pretrained import check_names
from tasks.detection.model import image_sizes, padding_masks

from .inference import MergeOptions, post_process
from .weights import RESNET50_ARGS, WEIGHTS

# The exported graph's outputs (what tasks.panoptic's TaskSpec declares), in export_forward's order.
EXPORT_OUTPUTS = ("pred_logits", "pred_boxes", "thing_masks", "stuff_masks", "stuff_logits")


class PanopticSegFormer(TaskModel):
    """``forward(pixel_values[B, 3, H, W], pixel_mask[B, H, W] | None, select=None) -> dict`` (see
    ``PanopticSegFormerHead``): ``pred_logits[B, Q, T]``, ``pred_boxes[B, Q, 4]`` (cx, cy, w, h normalised to
    each image's unpadded size), ``aux_outputs``; ``thing_index[B, N]``, ``thing_masks[B, N, H/8, W/8]`` (all Q
    queries unless ``select`` picks some, as training does), ``thing_aux_masks``; ``stuff_masks[B, S, H/8, W/8]``,
    ``stuff_aux_masks``, ``stuff_logits[B, S]``, ``stuff_aux_logits``. Masks are ReLU outputs (0.5 = the edge).

    Classes are contiguous: things ``0..T-1`` (``num_things_classes``), then stuff ``T..T+S-1``.
    ``category_ids``: the dataset's category id of each class (default ``1..T+S``), what predictions carry;
    ``class_names``: one name per class. ``merge``: ``MergeOptions`` fields (thresholds of the mask-wise merging).
    ``backbone_args`` None means frozen BN with the stem and stage1 frozen for ``resnet50`` (the authors').
    ``**head`` are the head's other hyper-parameters, the fields of ``PanopticSegFormerConfig`` (``num_queries``,
    ``hidden_dim``, ``thing_mask_layers``, ...; its defaults for the rest): declared there once, stored flat in
    ``model.config`` (our checkpoints).
    """

    task = "panoptic"
    weights_spec = WEIGHTS
    head_config = PanopticSegFormerConfig
    default_preprocessing = Preprocessing(resize="short_side", size=(800, 1333))  # the authors' test scale
    default_backbone_args = {"resnet50": RESNET50_ARGS}
    # config fields the task reads (losses, matching), not constructor arguments
    options_not_passed = ("weights", "cls_loss_coef", "bbox_loss_coef", "giou_loss_coef", "mask_loss_coef",
                          "stuff_cls_loss_coef", "max_pos", "focal_alpha")

    def __init__(
        self,
        backbone: str = "pvt_v2_b5",
        num_things_classes: int = PanopticSegFormerConfig.num_things_classes,
        num_stuff_classes: int = PanopticSegFormerConfig.num_stuff_classes,
        *,
        backbone_stages: Sequence[str] = ("stage2", "stage3", "stage4"),
        backbone_args: Mapping | None = None,
        backbone_weights: str | os.PathLike | None = None,
        class_names: Sequence[str] | None = None,
        category_ids: Sequence[int] | None = None,
        merge: Mapping | None = None,
        preprocessing: Preprocessing | Mapping | None = None,
        **head,
    ):
        config = self.head_options(num_things_classes=num_things_classes, num_stuff_classes=num_stuff_classes, **head)
        if len(tuple(backbone_stages)) != 3:
            raise ValueError(f"PanopticSegFormer: backbone_stages must name 3 stages (strides 8/16/32), got {backbone_stages!r}")
        super().__init__(backbone, out_features=tuple(backbone_stages), backbone_args=backbone_args,
                         backbone_weights=backbone_weights, preprocessing=preprocessing)
        total = num_things_classes + num_stuff_classes
        self.num_things_classes, self.num_stuff_classes = num_things_classes, num_stuff_classes
        self.class_names = check_names(class_names, total, "PanopticSegFormer")
        ids = tuple(range(1, total + 1)) if category_ids is None else tuple(int(i) for i in category_ids)
        if len(ids) != total or len(set(ids)) != total or min(ids) < 1:
            raise ValueError(f"PanopticSegFormer: category_ids must be {total} distinct positive ints (one per class, "
                             f"things first), got {category_ids!r}")
        self.category_ids = ids
        try:
            self.merge_options = MergeOptions(**dict(merge or {}))
        except TypeError as e:
            raise ValueError(f"PanopticSegFormer: merge takes {list(MergeOptions.__dataclass_fields__)}; got {merge!r}") from e
        self.head = PanopticSegFormerHead(self.in_channels, config)
        self._set_config(**dataclasses.asdict(config), backbone_stages=tuple(self.backbone.out_features),
                         class_names=self.class_names, category_ids=ids, merge=dict(vars(self.merge_options)))
        self.num_classes = total  # after _set_config: the config names the thing and stuff counts instead

    @property
    def isthing(self) -> tuple[bool, ...]:
        return tuple(i < self.num_things_classes for i in range(self.num_classes))

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None,
                select: Callable | None = None) -> dict:
        sizes = image_sizes(pixel_values, pixel_mask, type(self).__name__)
        sources = self.head.project(self.features(pixel_values))
        return self.head(sources, padding_masks(sizes, pixel_values, sources), select)

    def parameter_groups(self) -> dict[str, list[torch.nn.Module]]:
        """The recipe's x0.1 groups: the deformable attention's sampling offsets and the reference points."""
        offsets = [m.sampling_offsets for m in self.modules() if isinstance(m, MSDeformAttn)]
        return {"sampling_offsets": offsets, "reference_points": [self.head.detr.reference_points]}

    def post_process(self, outputs: Mapping, image_sizes, output_sizes, input_size) -> list[tuple[torch.Tensor, list]]:
        """``(panoptic int32 [H, W], segments)`` per image (see ``inference.post_process``)."""
        return post_process(outputs, image_sizes, output_sizes, input_size, self.num_things_classes,
                            self.category_ids, self.merge_options)

    def export_forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The network up to the merging, unpadded, every query decoded: ``EXPORT_OUTPUTS`` in order
        (``pred_logits[B, Q, T]``, ``pred_boxes[B, Q, 4]``, ``thing_masks[B, Q, H/8, W/8]``,
        ``stuff_masks[B, S, H/8, W/8]``, ``stuff_logits[B, S]``); ``predict`` merges them the same either way."""
        sources = self.head.project(self.features(pixel_values))
        out = self.head(sources, [s.new_zeros(s.shape[0], *s.shape[-2:], dtype=torch.bool) for s in sources])
        return tuple(out[name] for name in EXPORT_OUTPUTS)

    def for_export(self, sampler: str | None = None) -> "PanopticSegFormer":
        """A copy whose deformable attention samples with ``sampler`` (default ``"grid_sample"``, the reference;
        ``"gather"``: no GridSample)."""
        return set_sampler(copy.deepcopy(self), sampler or "grid_sample")

    def predict(self, image: np.ndarray) -> dict:
        """``{"panoptic": int32 [H, W] segment ids (0 = VOID), "segments": [{"id", "category_id", "isthing",
        "score", "label"}]}`` for ``image[H, W, 3]`` uint8 RGB, at the image's size (``category_id``: the dataset's
        id from ``category_ids``; ``label``: the contiguous class, an index into ``class_names``).

        Runs on anything whose call returns this model's outputs by name (an ONNX Runtime session of the exported
        network too): the merging settings come from the model's config."""
        x = self.preprocessing(image).to(self.device)
        config = getattr(self, "config", None) or self.info["config"]
        outputs = self(x)
        size = tuple(x.shape[-2:])
        things = config["num_things_classes"]
        category_ids = config.get("category_ids") or tuple(range(1, things + config["num_stuff_classes"] + 1))
        panoptic, segments = post_process(outputs, [size], [image.shape[:2]], size, things, category_ids,
                                          MergeOptions(**(config.get("merge") or {})))[0]
        return {"panoptic": panoptic.cpu().numpy(), "segments": segments}
