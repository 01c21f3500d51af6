"""Image classification: ImageClassifier (PVTv2 / MiT + mean pooling + linear head), ImageNet and folder
datasets, the DeiT augmentation and evaluation, top-k accuracy."""
from tasks.common.check_data import Release
from tasks.common.export import ExportBenchmark
from tasks.common.quantize import Int8Spec
from tasks.common.registry import TaskSpec, register_task

from .datasets import ImageFolder, ImageNet, imagenet_classes, summarize_samples
from .evaluator import Accuracy, top1_agreement
from .losses import classification_loss, soft_target_cross_entropy
from .model import ImageClassifier
from .presets import ImageClassifierModel, ImageNetData
from .task import ClassificationTask
from .transforms import EvalTransform, MixCollate, TrainTransform
from .visualize import render_classification, save_prediction_png
from .weights import PUBLISHED

__all__ = [
    "Accuracy",
    "EvalTransform",
    "ImageClassifier",
    "ImageFolder",
    "ImageNet",
    "MixCollate",
    "TrainTransform",
    "classification_loss",
    "imagenet_classes",
    "render_classification",
    "soft_target_cross_entropy",
]

register_task(TaskSpec(
    name="classification",
    task=ClassificationTask,
    model=ImageClassifier,
    model_options=ImageClassifierModel,
    picture=save_prediction_png,
    export_outputs=("logits",),  # [B, K]
    releases=(Release(ImageNetData, "ImageNet-1K (ILSVRC-2012)", (1_281_167, 50_000), "1,000 classes", classes=1000),),
    summarize=summarize_samples,
    published=PUBLISHED,
    int8=Int8Spec(top1_agreement, "top-1 agreement", 0.9),
    benchmark=ExportBenchmark({"backbone": "pvt_v2_b2", "num_classes": 1000}, (224, 224)),  # ImageNet centre crop
))
