"""Semantic segmentation: SegFormer on any registered backbone, ADE20K / folder datasets, mIoU."""
from tasks.common.check_data import Release
from tasks.common.export import ExportBenchmark
from tasks.common.quantize import Int8Spec
from tasks.common.registry import TaskSpec, register_task

from .datasets import ADE20K, ADE20K_CLASSES, ADE20K_PALETTE, SegmentationFolder, summarize_samples
from .evaluator import MeanIoU, pixel_agreement
from .inference import logits_to_labels, predict, slide_logits
from .losses import segmentation_loss
from .model import SegFormer
from .presets import ADE20KData, SegFormerModel
from .task import SegmentationTask
from .transforms import test_pipeline, train_pipeline
from .visualize import save_prediction_png
from .weights import PUBLISHED

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

register_task(TaskSpec(
    name="segmentation",
    task=SegmentationTask,
    model=SegFormer,
    model_options=SegFormerModel,
    picture=save_prediction_png,
    export_outputs=("logits",),  # [B, K, H/4, W/4]
    releases=(Release(ADE20KData, "ADE20K (SceneParse150)", (20_210, 2_000), "masks hold 0-150, 0 = other"),),
    summarize=summarize_samples,
    published=PUBLISHED,
    predict_options=("flip",),
    int8=Int8Spec(pixel_agreement, "pixel agreement", 0.95),  # LayerNorm and softmax stay float (the default)
    benchmark=ExportBenchmark({"backbone": "pvt_v2_b2", "num_classes": 150}, (512, 512)),  # ADE20K
))
