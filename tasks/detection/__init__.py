"""Object detection: Deformable-DETR on any registered backbone, COCO-format data, COCO evaluation."""
from .datasets import CocoDetection
from .evaluator import CocoEvaluator
from .losses import SetCriterion
from .matcher import HungarianMatcher
from .model import DeformableDETR
from .postprocess import post_process

__all__ = ["CocoDetection", "CocoEvaluator", "DeformableDETR", "HungarianMatcher", "SetCriterion", "post_process"]
