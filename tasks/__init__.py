"""Task models, losses, datasets and evaluators built on ``backbones`` and ``heads``.

``get_task(name)`` returns the object the training engine drives for a config's ``task``.
"""
from importlib import import_module

_TASKS = {
    "segmentation": "tasks.segmentation.task:SegmentationTask",
}


def get_task(name: str):
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(sorted(_TASKS))}")
    module, cls = _TASKS[name].split(":")
    return getattr(import_module(module), cls)()
