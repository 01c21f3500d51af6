"""Image classification: ImageClassifier (PVTv2 / MiT + mean pooling + linear head), ImageNet and folder
datasets, the DeiT augmentation and evaluation, top-k accuracy."""
from .datasets import ImageFolder, ImageNet, imagenet_classes
from .evaluator import Accuracy
from .losses import classification_loss, soft_target_cross_entropy
from .model import ImageClassifier
from .transforms import EvalTransform, MixCollate, TrainTransform
from .visualize import render_classification

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
