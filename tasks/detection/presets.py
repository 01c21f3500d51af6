"""Config sections for detection and the preset functions configs are written with."""
from __future__ import annotations

from dataclasses import dataclass

from heads.deformable_detr import DeformableDETRConfig

DETR_SCALES = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)


@dataclass
class DeformableDETRModel(DeformableDETRConfig):
    """The model section: the architecture's hyper-parameters (``DeformableDETRConfig``: ``num_classes``,
    ``num_queries``, ``with_box_refine``, ...), then the backbone, the initial weights, and the loss weights and
    matching costs the task reads."""

    backbone: str = "resnet50"
    backbone_args: dict | None = None  # None: the backbone's default (frozen BN, stem + stage1 frozen for resnet50)
    backbone_weights: str | None = None  # ImageNet-pretrained backbone: a local file or Hugging Face folder
    weights: str | None = None  # initialise the whole model (our checkpoint or an HF folder); not a resume
    # The original's loss weights and matching costs (Hugging Face uses 1 for the class terms).
    cls_loss_coef: float = 2.0
    bbox_loss_coef: float = 5.0
    giou_loss_coef: float = 2.0
    aux_loss: bool = True
    set_cost_class: float = 2.0
    set_cost_bbox: float = 5.0
    set_cost_giou: float = 2.0
    focal_alpha: float = 0.25


@dataclass
class DetectionData:
    """What every detection dataset shares: the training augmentation and the evaluation resize."""

    scales: tuple[int, ...] = DETR_SCALES  # random short side
    max_size: int = 1333
    crop_resize: tuple[int, ...] = (400, 500, 600)
    crop_size: tuple[int, int] = (384, 600)  # random crop side range
    test_size: int = 800
    batch_size: int = 4  # per process
    val_batch_size: int = 2  # results do not depend on it: the model is exact under padding
    num_workers: int = 4


@dataclass
class CocoData(DetectionData):
    """COCO layout: <root>/train2017/, val2017/, annotations/instances_{train,val}2017.json (or your own COCO json)."""

    root: str = "data/coco"
    train_images: str = "train2017"  # relative to root
    train_ann: str = "annotations/instances_train2017.json"
    val_images: str = "val2017"
    val_ann: str = "annotations/instances_val2017.json"


@dataclass
class ToyData(DetectionData):
    """Synthetic scenes written in the COCO layout on first use (tasks/detection/toy.py)."""

    root: str = "data/toy/detection"
    num_train: int = 300
    num_val: int = 50
    size: tuple[int, int] = (128, 128)  # (h, w)
    seed: int = 0


def deformable_detr(backbone: str = "resnet50", **kwargs) -> DeformableDETRModel:
    return DeformableDETRModel(backbone=backbone, **kwargs)


def coco(root: str = "data/coco", **kwargs) -> CocoData:
    """COCO 2017 with the Deformable-DETR recipe: multi-scale 480-800 (max 1333) with random crops; test 800."""
    return CocoData(root=root, **kwargs)
