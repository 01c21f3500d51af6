"""Panoptic segmentation: Panoptic SegFormer on any registered backbone, COCO panoptic data, PQ."""
