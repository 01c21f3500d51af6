"""INT8 ONNX files for CPUs: static post-training quantization with ONNX Runtime's tools, checked before it is kept.

``tools/export.py CHECKPOINT OUT.onnx --int8 --config CONFIG [--calib-images N]`` comes here. The fp32 file is
exported and checked as always (to a temporary name), then ``onnxruntime.quantization.quantize_static`` writes
the QDQ file: int8 weights per output channel, int8 activations with ranges from min/max calibration on N
training images (evenly spread over the config's training set) through the model's own preprocessing. Only the
compute-heavy ops (``QUANTIZED_OPS``: convolutions and matrix products) are quantized, and each task declares
what stays in float where quantizing costs accuracy (``Int8Spec``: op types such as Softmax / LayerNorm, and
modules such as the box and sampling-offset heads, by their path in the model); the file's metadata lists them.

The INT8 file is then compared with the fp32 file on held-out images (the validation set) through the task
model's own ``predict``, with the task's agreement metric (pixel agreement, depth relative error, box/score
agreement, top-1 agreement); a file below the task's bar is not kept (one ``ExportError``), and whatever the
outcome, an earlier file of that name is unchanged until the new one is complete and checked.
"""
from __future__ import annotations

import ast
import contextlib
import fnmatch
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from torch import nn

from .export import ExportError, OnnxPredictor, check_output, replace, require, temp_path, write_checked
from .registry import get_task_spec

# Quantized op types: where int8 kernels pay for the Quantize/Dequantize pairs around them.
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
NAME_SCOPES = "pkg.torch.onnx.name_scopes"  # the exporter's node metadata: the module path of each node


@dataclass(frozen=True)
class Int8Spec:
    """A task's INT8 declaration (``TaskSpec.int8``).

    ``agreement(fp32, int8)``: two lists of ``model.predict`` results on the same images -> one number, named
    ``metric``; the file is kept when it is at least ``bar`` (``higher_is_better``) or at most ``bar``.
    ``float_ops``: ONNX op types kept in float; ``float_modules``: ``fnmatch`` patterns over module paths in
    the task model (``head.*.sampling_offsets``) whose nodes are kept in float."""

    agreement: Callable[[list, list], float]
    metric: str
    bar: float
    higher_is_better: bool = True
    float_ops: tuple[str, ...] = ("Softmax", "LayerNormalization")
    float_modules: tuple[str, ...] = ()

    def passes(self, value: float) -> bool:
        return bool(value >= self.bar) if self.higher_is_better else bool(value <= self.bar)


@dataclass(frozen=True)
class Int8Exported:
    path: Path
    metric: str
    agreement: float
    bar: float
    float_nodes: int
    calibration_images: int

    def __str__(self) -> str:
        return (f"{self.path}: INT8 (QDQ, per-channel weights), calibrated on {self.calibration_images} training "
                f"images; {self.float_nodes} nodes kept in float; {self.metric} vs fp32 on held-out images "
                f"{self.agreement:.4f} (bar {self.bar:g})")


def module_path(node) -> str:
    """The module a node of an exported graph comes from, as a path in the task model ('' if unknown)."""
    for prop in node.metadata_props:
        if prop.key == NAME_SCOPES:
            scopes = ast.literal_eval(prop.value)
            modules = [s for s in scopes[:-1] if s]  # the last scope is the op itself
            path = modules[-1] if modules else ""
            return path[len("model."):] if path.startswith("model.") else path
    return ""


def float_nodes(graph, float_ops: Sequence[str], float_modules: Sequence[str]) -> list[str]:
    """Names of the nodes of ``graph`` (an ``onnx.GraphProto``) that stay in float."""
    keep = []
    for node in graph.node:
        path = module_path(node)
        if node.op_type in float_ops or (path and any(fnmatch.fnmatchcase(path, p) for p in float_modules)):
            keep.append(node.name)
    return keep


def quantize_file(fp32: str | os.PathLike, int8: str | os.PathLike, calibration: Iterable[np.ndarray],
                  float_ops: Sequence[str] = (), float_modules: Sequence[str] = ()) -> list[str]:
    """Write the QDQ INT8 model of the ONNX file ``fp32`` to ``int8`` (per-channel int8 weights, int8
    activations calibrated by min/max on the ``pixel_values`` arrays of ``calibration``, any sizes); returns the
    names of the nodes kept in float. The fp32 file's metadata is carried over."""
    require("onnx", "onnxruntime")
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as _quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.arrays = iter(calibration)

        def get_next(self):
            x = next(self.arrays, None)
            return None if x is None else {"pixel_values": x}

    source = onnx.load(str(fp32))
    keep = float_nodes(source.graph, float_ops, float_modules)
    with _quiet_root_logger():  # its advice (pre-processing) and per-bias notes are not the user's to act on
        _quantize_static(
            str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            # the calibration graph reduces every tensor to its min and max in the graph itself (ReduceMin/Max),
            # so images of different sizes calibrate together and only scalars are kept per image
            op_types_to_quantize=[op for op in QUANTIZED_OPS if op not in float_ops], nodes_to_exclude=keep,
        )
    quantized = onnx.load(str(int8))
    carried = {p.key: p.value for p in source.metadata_props}
    del quantized.metadata_props[:]
    for key, value in carried.items():
        quantized.metadata_props.add(key=key, value=value)
    onnx.save(quantized, str(int8))
    return keep


@contextlib.contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def set_metadata(path: Path, **entries) -> None:
    """Add ``entries`` (as JSON) to the ``densepred`` metadata of the ONNX file at ``path``."""
    import onnx

    model = onnx.load(str(path))
    props = {p.key: p for p in model.metadata_props}
    info = json.loads(props["densepred"].value)
    info.update(entries)
    props["densepred"].value = json.dumps(info, default=str)
    onnx.save(model, str(path))


def export_int8(model: nn.Module, output: str | os.PathLike, calibration: Sequence[np.ndarray],
                held_out: Sequence[np.ndarray], *, height: int, width: int, opset: int = 18,
                sampler: str | None = None, tolerance: float = 1e-4) -> Int8Exported:
    """Export ``model`` as an INT8 ONNX file at ``output``: the checked fp32 file, quantized with
    ``calibration`` (preprocessed ``pixel_values`` arrays), compared with fp32 on ``held_out`` (raw uint8 RGB
    images) by the task's ``Int8Spec``; renamed into place only when it passes (else ``ExportError``)."""
    task = getattr(model, "task", None)
    spec = get_task_spec(task).int8 if isinstance(task, str) else None
    if spec is None:
        raise ValueError(f"--int8: {type(model).__name__} declares no INT8 export (TaskSpec.int8)")
    output = check_output(output)
    fp32, int8 = temp_path(output, ".fp32"), temp_path(output)
    try:
        write_checked(model, fp32, output, height=height, width=width, opset=opset, sampler=sampler,
                      tolerance=tolerance)
        keep = quantize_file(fp32, int8, calibration, spec.float_ops, spec.float_modules)
        set_metadata(int8, int8={"format": "QDQ", "weights": "int8 per channel", "activations": "int8",
                                 "quantized_ops": [o for o in QUANTIZED_OPS if o not in spec.float_ops],
                                 "float_ops": list(spec.float_ops), "float_modules": list(spec.float_modules),
                                 "float_nodes": keep, "calibration_images": len(calibration)})
        value = agreement(fp32, int8, held_out, spec)
        if not spec.passes(value):
            side = "below" if spec.higher_is_better else "above"
            raise ExportError(f"{output}: the INT8 model's {spec.metric} vs fp32 on {len(held_out)} held-out images "
                              f"is {value:.4f}, {side} the bar {spec.bar:g}; not written (an earlier file of that "
                              f"name is unchanged)")
        set_metadata(int8, int8_check={"metric": spec.metric, "value": value, "bar": spec.bar,
                                       "images": len(held_out)})
        replace(int8, output)
    finally:
        fp32.unlink(missing_ok=True)
        int8.unlink(missing_ok=True)
    return Int8Exported(output, spec.metric, value, spec.bar, len(keep), len(calibration))


def check_int8_options(int8: bool, config, calib_images, cfg_options, backbone) -> None:
    """``tools/export.py``'s INT8 options fit together (before any model is read)."""
    if int8 and config is None:
        raise ValueError("--int8 needs --config CONFIG: its training set calibrates the INT8 model")
    if not int8 and (config is not None or calib_images is not None or cfg_options):
        raise ValueError("--config, --calib-images and --cfg-options go with --int8")
    if int8 and backbone is not None:
        raise ValueError("--int8 quantizes task models (a checkpoint with a config), not a bare --backbone")


def export_int8_for_config(model: nn.Module, output: str | os.PathLike, config: str, cfg_options: Sequence[str] = (),
                           *, calib_images: int = 64, **options) -> Int8Exported:
    """``export_int8`` calibrated on ``calib_images`` images of ``config``'s training set and checked on its
    validation set (``cfg_options``: ``--cfg-options``); the config must be for the model's task. ``options``:
    ``export_int8``'s keywords."""
    from .cli import config_and_task

    check_output(output)
    cfg, task = config_and_task(config, list(cfg_options))
    if cfg.task != getattr(model, "task", None):
        raise ValueError(f"--config {config} is a {cfg.task} config but the checkpoint is a "
                         f"{getattr(model, 'task', type(model).__name__)} model")
    calibration, held_out = calibration_sets(task, model, calib_images)
    return export_int8(model, output, calibration, held_out, **options)


def agreement(fp32: Path, int8: Path, images: Sequence[np.ndarray], spec: Int8Spec) -> float:
    """``spec.agreement`` of the two files' ``predict`` on ``images``."""
    a, b = OnnxPredictor(fp32), OnnxPredictor(int8)
    return float(spec.agreement([a.predict(im) for im in images], [b.predict(im) for im in images]))


def calibration_sets(task, model: nn.Module, count: int, held_out: int = 16) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``count`` training images (evenly spread) through ``model.preprocessing`` and up to ``held_out`` raw
    validation images, read with the datasets' own readers; a training set smaller than ``count`` is a
    ValueError."""
    from .check_data import build_datasets

    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"--calib-images must be a positive int, got {count!r}")
    datasets = build_datasets(task)
    for split, ds in datasets.items():
        if isinstance(ds, Exception):
            raise ValueError(f"--int8 reads the config's {split} set: {ds}")
    train, val = datasets["train"], datasets["val"]
    if len(train) < count:
        raise ValueError(f"--calib-images {count}: the config's training set has only {len(train)} images "
                         f"(give --calib-images {len(train)} or fewer)")
    if len(val) == 0:
        raise ValueError("--int8: the config's validation set is empty (the INT8 file is checked on it)")
    calib = [model.preprocessing(train.read(int(i))["image"]).numpy() for i in _spread(len(train), count)]
    images = [val.read(int(i))["image"] for i in _spread(len(val), min(held_out, len(val)))]
    return calib, images


def _spread(n: int, count: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, count).round().astype(int))
