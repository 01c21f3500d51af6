"""Monocular depth: GLPN on any registered backbone, NYU Depth v2 data, the standard depth metrics."""
from .datasets import NYUDepthV2
from .evaluator import DepthMetrics
from .inference import predict_depth
from .losses import silog_loss
from .model import GLPN
from .transforms import test_pipeline, train_pipeline

__all__ = ["DepthMetrics", "GLPN", "NYUDepthV2", "predict_depth", "silog_loss", "test_pipeline", "train_pipeline"]
