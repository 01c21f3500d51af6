"""Task models, losses, datasets and evaluators built on ``backbones`` and ``heads``.

A task is one package that declares a ``TaskSpec`` and registers it (``tasks.common.registry``); this file
imports each package, one line per task, and looks everything up in the registry: ``get_task(cfg)`` (the
engine's task object), ``get_task_spec(name)``, ``list_tasks()``, ``load_pretrained(path)`` (the model of any
checkpoint, folder or hub id).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from .common.pretrained import Checkpoint, open_checkpoint
from .common.registry import TaskSpec, build_task, get_task_spec, import_task, list_tasks, register_task, task_specs

from . import segmentation  # noqa: E402,F401  (each import registers its task)
from . import depth  # noqa: E402,F401
from . import detection  # noqa: E402,F401
from . import classification  # noqa: E402,F401
from . import panoptic  # noqa: E402,F401

get_task = build_task  # the engine's task object for a config

__all__ = ["TaskSpec", "checkpoint_task", "get_task", "get_task_spec", "list_tasks", "load_pretrained", "register_task"]


def checkpoint_task(path) -> str:
    """The task of a checkpoint: ours (``meta["task"]``), a model folder's config.json (ours: ``task``; Hugging
    Face: its ``model_type`` and architecture; timm: ``architecture``), or a hub id."""
    return _task_of(open_checkpoint(path))


def _task_of(ck: Checkpoint) -> str:
    if ck.folder_config is not None:
        return _task_of_config(ck.folder_config, ck.path / "config.json")
    meta = ck.meta
    if meta is not None and "task" in meta:
        if import_task(meta["task"], meta.get("module")):
            return meta["task"]
        raise ValueError(f"{ck.path} is a checkpoint of task {meta['task']!r}, which is not registered (registered: "
                         f"{', '.join(list_tasks())}; a task outside tasks/ must be importable as {meta.get('module')!r})")
    beside = ck.beside_config()
    if beside is not None:
        return _task_of_config(*beside)
    raise ValueError(
        f"{ck.path} is not a checkpoint written by tools/train.py (no meta['task']) and has no config.json beside it"
    )


def _task_of_config(cfg: Mapping, source: Path) -> str:
    if "task" in cfg and import_task(cfg["task"], cfg.get("module")):
        return cfg["task"]
    for spec in task_specs():
        weights = spec.model.weights_spec
        if cfg.get("model_type") in weights.hf_model_types:
            archs = cfg.get("architectures") or []
            if not weights.hf_architectures or not archs or set(archs) & set(weights.hf_architectures):
                return spec.name
        if "architecture" in cfg and "model_type" not in cfg and weights.config_from_timm is not None:
            return spec.name
    kind = cfg.get("model_type") or cfg.get("architecture") or cfg.get("task")
    readable = ", ".join(f"{s.name}: {' / '.join(s.model.weights_spec.hf_model_types)}" for s in task_specs())
    raise ValueError(f"{source} describes a {kind!r} model, which no task reads ({readable})")


def load_pretrained(path: str | os.PathLike, **kwargs):
    """The task model of any checkpoint, folder, short name or hub id (read once), built and loaded by its
    task model's ``from_pretrained`` (``kwargs`` go to it: the model's arguments, ``backbone_args={...}``)."""
    ck = open_checkpoint(path)
    return get_task_spec(_task_of(ck)).model.from_pretrained(ck, **kwargs)
