"""Panoptic segmentation: Panoptic SegFormer on any registered backbone, COCO panoptic data, PQ."""
from .losses import PanopticCriterion
from .matcher import MaskHungarianMatcher, QueryFilter
from .model import PanopticSegFormer
from .postprocess import MergeOptions, merge, post_process

__all__ = ["MaskHungarianMatcher", "MergeOptions", "PanopticCriterion", "PanopticSegFormer", "QueryFilter", "merge",
           "post_process"]
