"""Evaluate an exported ONNX file on a config's validation set, as a checkpoint is evaluated.

``tools/test.py CONFIG MODEL.onnx`` comes here: the task's own evaluator runs with the file in the place of the
network, so the table, the metrics and ``test_metrics.json`` are those of a checkpoint, and an fp32 file gives a
checkpoint's numbers (to float rounding: ONNX Runtime vs PyTorch is within 1e-4 on the outputs).

The stand-in (``onnx_model``) is the task model's own class, built from the file's stored config and then
emptied (no parameters or buffers left, so nothing can silently compute with them), whose ``forward`` runs the
file: ``predict``, post-processing, class names and the preprocessing stored in the file are the model
class's own. A batch with a ``pixel_mask`` (the detector's padded batches of mixed sizes) is run one size group
at a time, unpadded, as the exported graph takes it (the detector is batch-invariant); outputs with spatial
sides are zero-padded back to the batch's largest.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from . import checkpoint as ckpt
from .distributed import init_distributed
from .engine import _val_loader, evaluate
from .export import BACKBONE, onnx_session, read_metadata
from .preprocess import Preprocessing
from .registry import get_task_spec, import_task, list_tasks


def default_providers(device: torch.device | None = None) -> list:
    """ONNX Runtime's CUDA provider (on ``device``'s GPU) where this ONNX Runtime has it, then the CPU."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return ["CPUExecutionProvider"]
    index = device.index if device is not None and device.type == "cuda" and device.index is not None else 0
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


class OnnxNetwork:
    """Mixed into a task model class in front of it: ``forward`` runs the ONNX session (see the module doc)."""

    onnx_session = None
    onnx_outputs: tuple[str, ...] = ()

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")  # where the outputs come back (ONNX Runtime takes and gives host arrays)

    def forward(self, pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None = None):
        x = pixel_values.detach().float().cpu()
        groups: dict[tuple[int, int], list[int]] = {}
        for i, size in enumerate(image_sizes(x, pixel_mask)):
            groups.setdefault(size, []).append(i)
        runs = [(index, self.onnx_session.run(None, {"pixel_values": x[index, :, :h, :w].numpy()}))
                for (h, w), index in groups.items()]
        outputs = [_stitch([(index, torch.from_numpy(outs[k])) for index, outs in runs], x.shape[0])
                   for k in range(len(self.onnx_outputs))]
        if len(outputs) == 1:
            return outputs[0]
        return dict(zip(self.onnx_outputs, outputs))


def _stitch(parts: list[tuple[list[int], torch.Tensor]], batch: int) -> torch.Tensor:
    """One output for the whole batch from each size group's ``(indices, output)``, zero-padded at the end of
    any side that differs between groups (the spatial sides of mask outputs)."""
    if len(parts) == 1 and len(parts[0][0]) == batch:
        return parts[0][1]
    first = parts[0][1]
    shape = [max(p.shape[d] for _, p in parts) for d in range(1, first.dim())]
    out = first.new_zeros(batch, *shape)
    for index, p in parts:
        out[(torch.tensor(index), *(slice(0, n) for n in p.shape[1:]))] = p
    return out


def image_sizes(pixel_values: torch.Tensor, pixel_mask: torch.Tensor | None) -> list[tuple[int, int]]:
    """Each image's real (h, w): its top-left rectangle of ones in ``pixel_mask`` (None: the whole input)."""
    B, _, H, W = pixel_values.shape
    if pixel_mask is None:
        return [(H, W)] * B
    real = pixel_mask.bool().cpu()
    return list(zip(real.any(2).sum(1).tolist(), real.any(1).sum(1).tolist()))


def onnx_model(path: str | os.PathLike, *, providers: Sequence | None = None, threads: int | None = None) -> nn.Module:
    """The task model class of the ONNX file at ``path`` with the file as its network (see the module doc):
    ``model(pixel_values[, pixel_mask])``, ``model.predict(image)`` and the attributes the task's evaluator
    reads. ``model.onnx_provider`` names the ONNX Runtime provider in use."""
    session = onnx_session(path, threads, providers)
    info = read_metadata(path, session)
    task = info.get("task")
    if task == BACKBONE:
        raise ValueError(f"{path} is a bare backbone: it has no task to evaluate")
    if not import_task(task, info.get("module")):
        raise ValueError(f"{path}: task {task!r} is not registered (registered: {', '.join(list_tasks())})")
    cls = get_task_spec(task).model
    model = cls(**info["config"])
    for module in model.modules():  # the architecture's attributes, no weights: nothing can compute with them
        module._parameters.clear()
        module._buffers.clear()
    model.__class__ = type(f"Onnx{cls.__name__}", (OnnxNetwork, cls), {"__module__": cls.__module__})
    model.onnx_session, model.onnx_outputs, model.onnx_path = session, tuple(info["outputs"]), Path(path)
    model.onnx_provider = session.get_providers()[0]
    model.preprocessing = Preprocessing.from_dict(info["preprocessing"])
    return model.eval()


def evaluate_onnx(task, cfg, path: str | os.PathLike, work_dir: str | os.PathLike) -> dict:
    """Evaluate the ONNX file ``path`` on the config's validation set with the task's evaluator (sharded over
    processes under ``torchrun``, as for checkpoints), with the file's own preprocessing; writes
    ``test_metrics.json`` in ``work_dir`` naming the file and the ONNX Runtime provider."""
    info = init_distributed(cfg.runtime.device)
    model = onnx_model(path, providers=default_providers(info.device))
    if model.task != cfg.task:
        raise ValueError(f"{path} is a {model.task} model but the config is for {cfg.task}: give a {cfg.task} "
                         f"ONNX file (or the config it was trained with)")
    task.model_preprocessing = model.preprocessing
    metrics = evaluate(task, model, _val_loader(task, cfg, info), torch.device("cpu"))
    if info.is_main:
        out = {"onnx": str(path), "provider": model.onnx_provider, **metrics}
        ckpt.write_text_atomic(Path(work_dir) / "test_metrics.json", json.dumps(out, indent=2))
    return metrics
