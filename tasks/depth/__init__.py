"""Monocular depth: GLPN on any registered backbone, NYU Depth v2 data, the standard depth metrics."""
from tasks.common.check_data import Release
from tasks.common.export import ExportBenchmark
from tasks.common.quantize import Int8Spec
from tasks.common.registry import TaskSpec, register_task

from .datasets import NYUDepthV2, summarize_samples
from .evaluator import DepthMetrics, relative_difference
from .inference import predict_depth
from .losses import silog_loss
from .model import GLPN
from .presets import GLPNModel, NYUData
from .task import DepthTask
from .transforms import test_pipeline, train_pipeline
from .visualize import save_prediction_png
from .weights import PUBLISHED

__all__ = ["DepthMetrics", "GLPN", "NYUDepthV2", "predict_depth", "silog_loss", "test_pipeline", "train_pipeline"]

register_task(TaskSpec(
    name="depth",
    task=DepthTask,
    model=GLPN,
    model_options=GLPNModel,
    picture=save_prediction_png,
    export_outputs=("predicted_depth",),  # [B, 1, H, W] metres
    releases=(Release(NYUData, "NYU Depth v2 (GLPDepth lists)", (24_231, 654), "uint16 depth PNGs in millimetres"),),
    summarize=summarize_samples,
    published=PUBLISHED,
    predict_options=("flip",),
    # the last convolutions and the sigmoid that scale depth to metres stay float: they set the output directly
    int8=Int8Spec(relative_difference, "depth relative difference", 0.03, higher_is_better=False,
                  float_modules=("head.depth*",)),
    benchmark=ExportBenchmark({"backbone": "pvt_v2_b4"}, (480, 640)),  # NYU Depth v2
))
