"""Task models, losses, datasets and evaluators built on ``backbones`` and ``heads``.

``TASKS`` maps a config's ``task`` to the class the training engine drives (``tasks.common.task.Task``);
``TASK_MODELS`` maps it to the model class; ``load_pretrained(path)`` builds the model of any checkpoint.
"""
from __future__ import annotations

import os
from pathlib import Path

from .classification.model import ImageClassifier
from .classification.task import ClassificationTask
from .depth.model import GLPN
from .depth.task import DepthTask
from .detection.model import DeformableDETR
from .detection.task import DetectionTask
from .panoptic.model import PanopticSegFormer
from .panoptic.task import PanopticTask
from .segmentation.model import SegFormer
from .segmentation.task import SegmentationTask

TASKS = {"segmentation": SegmentationTask, "depth": DepthTask, "detection": DetectionTask,
         "classification": ClassificationTask, "panoptic": PanopticTask}
TASK_MODELS = {"segmentation": SegFormer, "depth": GLPN, "detection": DeformableDETR,
               "classification": ImageClassifier, "panoptic": PanopticSegFormer}


def get_task(cfg):
    """The engine's task object for a config (chosen by ``cfg.task``)."""
    if cfg.task not in TASKS:
        raise ValueError(f"unknown task {cfg.task!r}; available: {', '.join(sorted(TASKS))}")
    return TASKS[cfg.task](cfg)


def checkpoint_task(path: str | os.PathLike) -> str:
    """The task of a checkpoint: ours (``meta["task"]``), a model folder's config.json (ours: ``task``; Hugging
    Face: its ``model_type`` and architecture; timm: ``architecture``), or a hub id."""
    from .common.pretrained import load_torch_file, read_json, resolve

    p = resolve(path)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ValueError(f"{p} is a folder but not a model folder: config.json is missing")
        return _task_of_config(read_json(p / "config.json"), p / "config.json")
    obj = load_torch_file(p)
    meta = obj.get("meta") if isinstance(obj, dict) else None
    if isinstance(meta, dict) and meta.get("task") in TASKS:
        return meta["task"]
    if (p.parent / "config.json").is_file():
        return _task_of_config(read_json(p.parent / "config.json"), p.parent / "config.json")
    raise ValueError(
        f"{p} is not a checkpoint written by tools/train.py (no meta['task']) and has no config.json beside it"
    )


def _task_of_config(cfg: dict, source: Path) -> str:
    if cfg.get("task") in TASKS:
        return cfg["task"]
    for task, model in TASK_MODELS.items():
        spec = model.weights_spec
        if cfg.get("model_type") in spec.hf_model_types:
            archs = cfg.get("architectures") or []
            if not spec.hf_architectures or not archs or set(archs) & set(spec.hf_architectures):
                return task
        if "architecture" in cfg and "model_type" not in cfg and spec.config_from_timm is not None:
            return task
    kind = cfg.get("model_type") or cfg.get("architecture")
    readable = ", ".join(f"{t}: {' / '.join(m.weights_spec.hf_model_types)}" for t, m in TASK_MODELS.items())
    raise ValueError(f"{source} describes a {kind!r} model, which no task reads ({readable})")


def load_pretrained(path: str | os.PathLike, **backbone_args):
    """The task model of any checkpoint (``checkpoint_task``), built and loaded by its ``from_pretrained``."""
    return TASK_MODELS[checkpoint_task(path)].from_pretrained(path, **backbone_args)
