"""Config sections for classification and the preset functions configs are written with."""
from __future__ import annotations

from dataclasses import dataclass, field

from tasks.common.config import ScheduleConfig
from tasks.common.images import IMAGENET_MEAN, IMAGENET_STD

IMAGENET_TRAIN_IMAGES = 1_281_167  # ILSVRC-2012 training set


@dataclass
class ImageClassifierModel:
    backbone: str = "pvt_v2_b0"
    num_classes: int = 1000
    dropout: float = 0.0  # before the linear head (the PVTv2 recipe uses none)
    backbone_args: dict = field(default_factory=dict)  # build_backbone overrides, e.g. {"drop_path_rate": 0.1}
    backbone_weights: str | None = None  # pre-trained backbone only: a local file or Hugging Face folder
    weights: str | None = None  # the whole model, head included (our checkpoint, an HF/timm folder, a .pth)


@dataclass
class ClassificationData:
    """What every classification dataset shares: the DeiT training augmentation and evaluation protocol."""

    input_size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area fraction
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: str = "bicubic"  # bicubic | bilinear (training crops and the evaluation resize)
    hflip: float = 0.5
    rand_augment: tuple[int, int] | None = (2, 9)  # (num_ops, magnitude on timm's 0-10 scale); None: off
    random_erasing: float = 0.25
    mixup_alpha: float = 0.8  # 0: no MixUp
    cutmix_alpha: float = 1.0  # 0: no CutMix
    mix_prob: float = 1.0  # probability that a batch is mixed at all
    switch_prob: float = 0.5  # probability of CutMix rather than MixUp
    label_smoothing: float = 0.1
    test_resize: str = "short_side_crop"  # DeiT: short side to int(input_size / crop_pct), centre crop | fixed
    crop_pct: float = 0.875  # 224 / 0.875 = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN  # 0-1 units
    std: tuple[float, float, float] = IMAGENET_STD
    per_class: bool = False  # also report (and print) every class's accuracy
    batch_size: int = 128  # per process
    val_batch_size: int = 64
    num_workers: int = 8


@dataclass
class ImageNetData(ClassificationData):
    root: str = "data/imagenet"  # holds train/<wnid>/*.JPEG and val/<wnid>/*.JPEG


@dataclass
class FolderData(ClassificationData):
    """Your own data: ``train_dir/<class>/<images>`` and ``val_dir/<class>/<images>`` with the same class folders."""

    train_dir: str = "data/custom/train"
    val_dir: str = "data/custom/val"
    class_names: tuple[str, ...] = ()  # display names in sorted folder order; () = the folder names


@dataclass
class ToyData(ClassificationData):
    """Synthetic shape classes written in the ImageNet layout on first use (``tasks/classification/toy.py``)."""

    root: str = "data/toy/classification"
    num_train: int = 200  # per class
    num_val: int = 50  # per class
    size: tuple[int, int] = (64, 64)  # (h, w) of the written images
    seed: int = 0


def drop_path_for(backbone: str) -> float:
    """The PVTv2 recipe's stochastic depth: 0.3 for b3-b5, 0.1 for the smaller variants."""
    return 0.3 if backbone.rsplit("_", 1)[-1] in ("b3", "b4", "b5") else 0.1


def classifier(backbone: str, num_classes: int = 1000, *, drop_path_rate: float | None = None, **kwargs) -> ImageClassifierModel:
    """``ImageClassifier`` on ``backbone`` with the recipe's drop path (``drop_path_for``) unless given."""
    rate = drop_path_for(backbone) if drop_path_rate is None else drop_path_rate
    return ImageClassifierModel(backbone=backbone, num_classes=num_classes, backbone_args={"drop_path_rate": rate}, **kwargs)


def imagenet(root: str = "data/imagenet", **kwargs) -> ImageNetData:
    """ImageNet-1K with the DeiT augmentation and evaluation (all defaults of ``ClassificationData``)."""
    return ImageNetData(root=root, **kwargs)


def deit_lr(total_batch: int, base: float = 5e-4) -> float:
    """DeiT's linear scaling rule: ``base`` per 512 images, so 1e-3 at the recipe's total batch of 1024."""
    return base * total_batch / 512


def cosine_epochs(epochs: int, *, warmup_epochs: int, total_batch: int, samples_per_epoch: int = IMAGENET_TRAIN_IMAGES,
                  lr: float, warmup_lr: float = 1e-6, min_lr: float = 1e-5, **kwargs) -> ScheduleConfig:
    """Cosine decay to ``min_lr`` over ``epochs`` after a linear warm-up from ``warmup_lr`` (DeiT's schedule).

    The epochs become iterations when training starts (from the real dataset size); the warm-up is counted
    here from ``samples_per_epoch``. timm steps its scheduler once per epoch, ours every iteration.
    """
    per_epoch = samples_per_epoch // total_batch
    return ScheduleConfig(
        epochs=epochs, policy="cosine", warmup_iters=warmup_epochs * per_epoch, warmup_ratio=warmup_lr / lr,
        min_lr_ratio=min_lr / lr, total_batch=total_batch, **kwargs,
    )
