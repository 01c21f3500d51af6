"""Config sections for segmentation and the preset functions configs are written with."""
from __future__ import annotations

from dataclasses import dataclass, field

from tasks.common.images import IMAGENET_MEAN_255, IMAGENET_STD_255


@dataclass
class SegFormerModel:
    backbone: str = "mit_b0"
    num_classes: int = 150
    decoder_dim: int | None = None  # None: 256 for b0/b1-sized backbones, 768 above
    dropout: float = 0.1
    backbone_args: dict = field(default_factory=dict)  # build_backbone overrides, e.g. {"drop_path_rate": 0.1}
    backbone_weights: str | None = None  # ImageNet-pretrained backbone: a local file or Hugging Face folder
    weights: str | None = None  # initialise the whole model (our checkpoint or an HF folder); not a resume


@dataclass
class SegmentationData:
    """What every segmentation dataset shares: the training pipeline and the evaluation protocol."""

    crop: int = 512
    scale: tuple[int, int] = (2048, 512)  # (long, short) before the random ratio
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    test_scale: tuple[int, int] = (2048, 512)  # keep-ratio, then sides rounded up to multiples of 32
    test_ratios: tuple[float, ...] = (1.0,)  # multi-scale: (0.75, 0.875, 1.0, 1.125, 1.25) on ADE20K
    test_flip: bool = False
    test_mode: str = "whole"  # whole | slide
    test_crop: tuple[int, int] | None = None  # slide: window, e.g. (1024, 1024) on Cityscapes
    test_stride: tuple[int, int] | None = None  # slide: step, e.g. (768, 768)
    mean: tuple[float, float, float] = IMAGENET_MEAN_255  # 0..255 pixel units, like the pipeline's Normalize
    std: tuple[float, float, float] = IMAGENET_STD_255
    batch_size: int = 2  # per process
    num_workers: int = 4


@dataclass
class ADE20KData(SegmentationData):
    root: str = "data/ade/ADEChallengeData2016"


@dataclass
class FolderData(SegmentationData):
    """Your own data: folders of images and masks (class indices) matched by file stem."""

    train_images: str = "data/custom/images/train"
    train_masks: str = "data/custom/masks/train"
    val_images: str = "data/custom/images/val"
    val_masks: str = "data/custom/masks/val"
    class_names: tuple[str, ...] = ()
    reduce_zero_label: bool = False  # masks where 0 is "unlabelled" and 1..K the classes


@dataclass
class ToyData(SegmentationData):
    """Synthetic scenes written in the ADE20K layout on first use (tasks/segmentation/toy.py)."""

    root: str = "data/toy/segmentation"
    num_train: int = 300
    num_val: int = 50
    size: tuple[int, int] = (128, 128)  # (h, w)
    seed: int = 0


def segformer(backbone: str, num_classes: int, *, drop_path_rate: float = 0.1, **kwargs) -> SegFormerModel:
    """SegFormer on ``backbone`` with the paper's stochastic depth (0.1)."""
    return SegFormerModel(backbone=backbone, num_classes=num_classes, backbone_args={"drop_path_rate": drop_path_rate}, **kwargs)


def ade20k(root: str = "data/ade/ADEChallengeData2016", *, crop: int = 512, **kwargs) -> ADE20KData:
    """ADE20K with the SegFormer recipe: random rescale 0.5-2.0 of (2048, crop), crop, flip, photometric."""
    return ADE20KData(root=root, crop=crop, scale=(2048, crop), test_scale=(2048, crop), **kwargs)
