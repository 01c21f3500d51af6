"""Config sections for depth estimation and the preset functions configs are written with."""
from __future__ import annotations

from dataclasses import dataclass, field

NYU_TRAIN_PAIRS = 24_231  # the BTS / GLPDepth training list
NYU_TEST_IMAGES = 654  # the Eigen test split


@dataclass
class GLPNModel:
    backbone: str = "mit_b4"
    max_depth: float = 10.0  # NYU 10 m, KITTI 80 m
    decoder_dim: int = 64
    backbone_args: dict = field(default_factory=lambda: {"drop_path_rate": 0.1})
    backbone_weights: str | None = None  # ImageNet-pretrained backbone: a local file or Hugging Face folder
    weights: str | None = None  # initialise the whole model (our checkpoint or an HF folder); not a resume


@dataclass
class DepthData:
    """What every depth dataset shares: the training crop and the evaluation protocol."""

    crop: tuple[int, int] = (448, 576)  # random training crop (h, w)
    min_depth: float = 1e-3  # evaluation: valid ground truth is strictly inside (min_depth, max_depth)
    max_depth: float = 10.0
    eval_crop: str | None = "eigen"  # eigen (NYU 480x640) | garg (KITTI) | None
    test_flip: bool = False  # also report flip-averaged metrics (keys suffixed _flip)
    batch_size: int = 12  # per process
    num_workers: int = 4


@dataclass
class NYUData(DepthData):
    """NYU Depth v2 in the GLPDepth layout: <root>/nyu_depth_v2/... with train_list.txt and test_list.txt."""

    root: str = "data/nyu"
    train_list: str | None = None  # default: <root>/nyu_depth_v2/train_list.txt
    test_list: str | None = None  # default: <root>/nyu_depth_v2/test_list.txt


@dataclass
class ToyData(DepthData):
    """Synthetic scenes written in the NYU layout on first use (tasks/depth/toy.py)."""

    root: str = "data/toy/depth"
    num_train: int = 300
    num_val: int = 50
    size: tuple[int, int] = (120, 160)  # (h, w)
    seed: int = 0


def glpn(backbone: str = "mit_b4", max_depth: float = 10.0, **kwargs) -> GLPNModel:
    return GLPNModel(backbone=backbone, max_depth=max_depth, **kwargs)


def nyu(root: str = "data/nyu", **kwargs) -> NYUData:
    """NYU Depth v2 with the GLPN recipe: crop 448x576, Eigen crop, 1e-3..10 m."""
    return NYUData(root=root, **kwargs)
