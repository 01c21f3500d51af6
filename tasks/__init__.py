"""Task models, losses, datasets and evaluators built on ``backbones`` and ``heads``.

``get_task(cfg)`` returns the object the training engine drives for a config (chosen by ``cfg.task``).
"""
import json
from importlib import import_module
from pathlib import Path

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


_HF_MODEL_TYPES = {"segformer": "segmentation", "glpn": "depth", "deformable_detr": "detection"}


def checkpoint_task(path) -> str:
    """The task of a checkpoint: ours (``meta["task"]``) or a Hugging Face folder (its ``model_type``)."""
    p = Path(path)
    if p.is_dir():
        config = p / "config.json"
        model_type = json.loads(config.read_text()).get("model_type") if config.is_file() else None
        if model_type not in _HF_MODEL_TYPES:
            raise ValueError(f"{p}: not a Hugging Face folder of {', '.join(_HF_MODEL_TYPES)} (model_type {model_type!r})")
        return _HF_MODEL_TYPES[model_type]
    from tasks.common.checkpoint import load

    meta = load(p).get("meta") or {}
    if meta.get("task") not in _TASKS:
        raise ValueError(f"{p}: not a checkpoint written by tools/train.py (no meta['task'])")
    return meta["task"]
