"""Config sections for panoptic segmentation and the preset functions configs are written with."""
from __future__ import annotations

from dataclasses import dataclass

from tasks.detection.transforms import DETR_SCALES  # the authors' = DETR's multi-scale short sides

from heads.panoptic_segformer import PanopticSegFormerConfig


@dataclass
class PanopticSegFormerModel(PanopticSegFormerConfig):
    """The model section: the architecture's hyper-parameters (``PanopticSegFormerConfig``; ``num_things_classes``
    and ``num_stuff_classes`` must equal the dataset's counts of isthing 1 / 0 categories, checked when the model is
    built), then the backbone, the initial weights, the merging thresholds, and what the task reads (losses, the
    query filter)."""

    backbone: str = "pvt_v2_b5"
    backbone_args: dict | None = None  # None: the backbone's default (frozen BN, stem + stage1 frozen for resnet50)
    backbone_weights: str | None = None  # ImageNet-pretrained backbone: a local file, hub id or short name
    weights: str | None = None  # initialise the whole model (our checkpoint or the authors' release)
    merge: dict | None = None  # mask-wise merging thresholds (tasks.panoptic.inference.MergeOptions fields)
    # The authors' loss weights (focal 2, L1 5, GIoU 2, dice 2, stuff presence focal 2 x 2) and query filter.
    cls_loss_coef: float = 2.0
    bbox_loss_coef: float = 5.0
    giou_loss_coef: float = 2.0
    mask_loss_coef: float = 2.0
    stuff_cls_loss_coef: float = 4.0
    # queries per object sent to the mask decoder: 1 as the authors' released code (> 1: their older assigner's
    # repeated matching, a deviation; see tasks/panoptic/matcher.py)
    max_pos: int = 1
    focal_alpha: float = 0.25


@dataclass
class PanopticData:
    """What every panoptic dataset shares: the training augmentation and the evaluation resize."""

    scales: tuple[int, ...] = DETR_SCALES  # random short side
    max_size: int = 1333
    crop_resize: tuple[int, ...] = (400, 500, 600)
    crop_size: tuple[int, int] = (384, 600)  # random crop side range
    test_size: int = 800
    batch_size: int = 1  # per process (the authors: 1 image per GPU, 8 GPUs)
    val_batch_size: int = 1  # one image at a time: a padded batch changes results slightly (see model.py)
    num_workers: int = 2
    save_predictions: str | None = None  # a folder: evaluation also writes the COCO panoptic PNGs + json there


@dataclass
class CocoPanopticData(PanopticData):
    """COCO panoptic layout: <root>/{train2017,val2017}/ images, <root>/annotations/panoptic_{train,val}2017.json
    and the PNG folders beside them (or your own data in that format)."""

    root: str = "data/coco"
    train_images: str = "train2017"  # relative to root
    train_ann: str = "annotations/panoptic_train2017.json"
    val_images: str = "val2017"
    val_ann: str = "annotations/panoptic_val2017.json"


@dataclass
class ToyData(PanopticData):
    """Synthetic scenes written in the COCO panoptic layout on first use (tasks/panoptic/toy.py)."""

    root: str = "data/toy/panoptic"
    num_train: int = 300
    num_val: int = 50
    size: tuple[int, int] = (128, 128)  # (h, w)
    seed: int = 0


def panoptic_segformer(backbone: str = "pvt_v2_b5", **kwargs) -> PanopticSegFormerModel:
    return PanopticSegFormerModel(backbone=backbone, **kwargs)


def coco_panoptic(root: str = "data/coco", **kwargs) -> CocoPanopticData:
    """COCO panoptic 2017 with the authors' (DETR's) augmentation: multi-scale 480-800 (max 1333) or resize 400-600 +
    crop 384-600 + multi-scale; test at short side 800."""
    return CocoPanopticData(root=root, **kwargs)
