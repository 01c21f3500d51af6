"""Task models, losses, datasets and evaluators built on ``backbones`` and ``heads``.

``get_task(cfg)`` returns the object the training engine drives for a config (chosen by ``cfg.task``).
"""
from importlib import import_module

_TASKS = {
    "segmentation": "tasks.segmentation.task:SegmentationTask",
    "depth": "tasks.depth.task:DepthTask",
    "detection": "tasks.detection.task:DetectionTask",
}


def get_task(cfg):
    if cfg.task not in _TASKS:
        raise ValueError(f"unknown task {cfg.task!r}; available: {', '.join(sorted(_TASKS))}")
    module, cls = _TASKS[cfg.task].split(":")
    return getattr(import_module(module), cls)(cfg)
