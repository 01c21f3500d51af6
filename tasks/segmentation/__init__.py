"""Semantic segmentation: SegFormer on any registered backbone, ADE20K / folder datasets, mIoU."""
from .datasets import ADE20K, ADE20K_CLASSES, ADE20K_PALETTE, SegmentationFolder
from .evaluator import MeanIoU
from .inference import logits_to_labels, predict, slide_logits
from .losses import segmentation_loss
from .model import SegFormer
from .transforms import test_pipeline, train_pipeline

__all__ = [
    "ADE20K",
    "ADE20K_CLASSES",
    "ADE20K_PALETTE",
    "MeanIoU",
    "SegFormer",
    "SegmentationFolder",
    "logits_to_labels",
    "predict",
    "segmentation_loss",
    "slide_logits",
    "test_pipeline",
    "train_pipeline",
]
