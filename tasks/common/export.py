"""Export a task model or a bare backbone to ONNX with dynamic batch, height and width, check the file with
ONNX Runtime against PyTorch, and run it again with the model's own ``predict``.

Exporter: ``torch.export`` (dynamo) and then ``torch.onnx.export(exported_program)``. The TorchScript
exporter (``dynamo=False``) is being retired, and it traces: sizes it sees become constants, so a Deformable
DETR traced at 256x320 with dynamic axes runs at 320x448 and is silently wrong (logits off by 0.6).
``torch.export`` instead keeps sizes symbolic and refuses (with the line that did it) any code that would
bake a size in, which is why the model code keeps shapes symbolic (no ``int()`` of a size, no ``linspace``
of a symbolic length, crops without size branches). ONNX Runtime then runs the file at two other sizes and
batch 2, and a file that disagrees with PyTorch is deleted.

Graph inputs and outputs: ``pixel_values[B, 3, H, W]`` float32 (any B >= 1, H, W >= ``MIN_SIDE``) -> the
outputs the task declares (``TaskSpec.export_outputs``, computed by the model's ``export_forward``), or
``stage1`` ... ``stage4`` for a backbone. A task model whose forward takes more than ``pixel_values`` (the
detector's ``pixel_mask``) exports its unpadded path: a deployed batch holds same-sized, unpadded images. Preprocessing, label
names and the model config are stored as JSON in the file's ``metadata_props`` (keys ``densepred``,
``preprocessing``, ``class_names``).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .checkpoint import WriteError
from .preprocess import Preprocessing
from .registry import get_task_spec, import_task, list_tasks

INSTALL_HINT = 'pip install "densepred[export]"'
# 65: Deformable-DETR's extra stride-64 level needs >= 2 tokens a side for the traced shapes to stay general.
MIN_SIDE = 65
MAX_SIDE = 8192
BACKBONE = "backbone"  # the kind of a bare backbone (not a task)
BACKBONE_OUTPUTS = ("stage1", "stage2", "stage3", "stage4")


@dataclass(frozen=True)
class Exported:
    """What ``export_onnx`` wrote: the file, the model kind, output names, the sizes it was checked at
    ((batch, h, w) each) and the largest ONNX Runtime vs PyTorch difference there."""

    path: Path
    kind: str
    outputs: tuple[str, ...]
    checked: tuple[tuple[int, int, int], ...]
    max_difference: float

    def __str__(self) -> str:
        sizes = ", ".join(f"{b}x3x{h}x{w}" for b, h, w in self.checked)
        return (f"{self.path}: {self.kind} -> {', '.join(self.outputs)}; ONNX Runtime matches PyTorch at {sizes} "
                f"(max difference {self.max_difference:.2g})")


@dataclass(frozen=True)
class ExportBenchmark:
    """A task's deployment benchmark (``TaskSpec.benchmark``): its recipe's model (the model class's constructor
    arguments) and evaluation input size (h, w), timed by ``tools/benchmarks/export.py``."""

    model: dict
    size: tuple[int, int]


class ExportError(ValueError):
    """The exported file does not reproduce PyTorch (it was not kept)."""


def require(*modules: str) -> None:
    """Raise one ImportError naming the extra when an export dependency is missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"ONNX export needs {', '.join(missing)}: {INSTALL_HINT}")


def model_kind(model: nn.Module) -> str:
    """A task model's ``task`` (a registered task) or ``"backbone"`` (a module from ``build_backbone``)."""
    kind = getattr(model, "task", None)
    if isinstance(kind, str) and kind in list_tasks():
        return kind
    if hasattr(model, "feature_channels") and hasattr(model, "out_features"):
        return BACKBONE
    raise TypeError(f"export: expected a task model or a backbone, got {type(model).__name__}")


class ExportGraph(nn.Module):
    """What is exported: ``forward(pixel_values) -> tuple`` of the outputs named by ``output_names``."""

    def __init__(self, model: nn.Module, kind: str):
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.kind == BACKBONE:
            features = self.model(pixel_values)
            return tuple(features[name] for name in BACKBONE_OUTPUTS if name in features)
        return tuple(self.model.export_forward(pixel_values))


def output_names(model: nn.Module, kind: str) -> tuple[str, ...]:
    if kind == BACKBONE:
        return tuple(model.out_features)
    return get_task_spec(kind).export_outputs


def export_program(model: nn.Module, height: int, width: int, *, dynamic: bool = True, sampler: str | None = None):
    """``torch.export`` of ``ExportGraph(model)`` with dynamic batch, height and width (``dynamic``), at an
    example input of batch 2 (batch 1 would be specialised). ``sampler`` is passed to the task model's
    ``for_export`` (the deformable attention's sampler, on a copy: ``"gather"``, no GridSample; default
    ``"grid_sample"``, the reference)."""
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or not MIN_SIDE <= value <= MAX_SIDE:
            raise ValueError(f"export: {name} must be an int in [{MIN_SIDE}, {MAX_SIDE}], got {value!r}")
    kind = model_kind(model)
    model = model.eval()
    if kind != BACKBONE:
        model = model.for_export(sampler)
    example = torch.randn(2, 3, height, width, device=next(model.parameters()).device)
    shapes = None
    if dynamic:
        dim = torch.export.Dim
        shapes = ({0: dim("batch", min=1, max=1024), 2: dim("height", min=MIN_SIDE, max=MAX_SIDE),
                   3: dim("width", min=MIN_SIDE, max=MAX_SIDE)},)
    return torch.export.export(ExportGraph(model, kind), (example,), dynamic_shapes=shapes), kind


def metadata(model: nn.Module, kind: str, *, sampler: str | None, opset: int) -> dict[str, str]:
    """The JSON strings stored in the ONNX file's ``metadata_props``."""
    preprocessing = getattr(model, "preprocessing", None) or Preprocessing()
    names = getattr(model, "class_names", None)
    info = {
        "task": kind,
        "module": type(model).__module__,  # imported on load if the task is not registered (registry.import_task)
        "outputs": list(output_names(model, kind)),
        "preprocessing": preprocessing.to_dict(),
        "class_names": list(names) if names is not None else None,
        "config": getattr(model, "config", None),
        "sampler": sampler,
        "min_side": MIN_SIDE,
        "exporter": f"torch.export + torch.onnx.export (dynamo), torch {torch.__version__}, opset {opset}",
    }
    return {
        "densepred": json.dumps(info, default=str),
        "preprocessing": json.dumps(info["preprocessing"]),
        "class_names": json.dumps(info["class_names"]),
    }


def export_onnx(
    model: nn.Module,
    output: str | os.PathLike,
    *,
    height: int,
    width: int,
    opset: int = 18,
    sampler: str | None = None,
    check_sizes: Sequence[tuple[int, int, int]] | None = None,
    tolerance: float = 1e-4,
) -> Exported:
    """Write ``model`` to ``output`` (.onnx) and check it: ONNX Runtime vs PyTorch at ``check_sizes``
    ((batch, h, w) each; default ``default_check_sizes(height, width)``), within ``tolerance`` (absolute and
    relative). The file is written under a temporary name in the same folder and renamed into place only once
    checked, so a failed export (an ``ExportError`` saying where it differs, or a ``WriteError`` naming the file
    and the cause, e.g. a full disk) leaves no partial file and an earlier ``output`` byte-identical."""
    output = check_output(output)
    tmp = temp_path(output)
    try:
        exported = write_checked(model, tmp, output, height=height, width=width, opset=opset, sampler=sampler,
                                 check_sizes=check_sizes, tolerance=tolerance)
        replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return dataclasses.replace(exported, path=output)


def check_output(output: str | os.PathLike) -> Path:
    """``output`` as a Path once it ends in .onnx and its folder takes a new file (checked before minutes of
    export work: a missing or read-only folder is one line now, not after the export)."""
    require("onnx", "onnxruntime", "onnxscript")
    output = Path(output)
    if output.suffix != ".onnx":
        raise ValueError(f"export: OUTPUT must end in .onnx, got {str(output)!r}")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"export: the folder of OUTPUT does not exist: {output.parent}")
    probe = temp_path(output)
    try:
        probe.open("wb").close()
    except OSError as e:
        raise WriteError(output, e) from e
    probe.unlink()
    return output


def temp_path(output: Path, part: str = "") -> Path:
    """The temporary name beside ``output`` (``.<name><part>.tmp<pid>``: ``remove_stale_temps`` knows it)."""
    return output.with_name(f".{output.name}{part}.tmp{os.getpid()}")


def replace(tmp: Path, output: Path) -> None:
    """Rename the checked ``tmp`` over ``output`` (atomic in one folder); an OSError is a ``WriteError``."""
    try:
        os.replace(tmp, output)
    except OSError as e:
        raise WriteError(output, e) from e


def write_checked(model: nn.Module, path: Path, name: Path, *, height: int, width: int, opset: int = 18,
                  sampler: str | None = None, check_sizes: Sequence[tuple[int, int, int]] | None = None,
                  tolerance: float = 1e-4) -> Exported:
    """Export ``model`` to ``path`` (a temporary file) and check it (see ``export_onnx``); errors name ``name``,
    the file the user asked for."""
    program, kind = export_program(model, height, width, sampler=sampler)
    onnx_program = torch.onnx.export(
        program, input_names=["pixel_values"], output_names=list(output_names(model, kind)),
        opset_version=opset, dynamo=True, verbose=False,
    )
    onnx_program.model.metadata_props.update(metadata(model, kind, sampler=sampler, opset=opset))
    try:
        onnx_program.save(path, external_data=False)
    except OSError as e:  # a full disk: the name the user gave, and the cause
        raise WriteError(name, e) from e
    sizes = tuple(check_sizes or default_check_sizes(height, width))
    worst = verify(path, model, sizes, tolerance=tolerance, name=name)
    return Exported(path, kind, output_names(model, kind), sizes, worst)


def default_check_sizes(height: int, width: int) -> list[tuple[int, int, int]]:
    """Two sizes other than the export size, odd ones (the crops of non-multiples of 32), batch 1 and 2."""
    first = (1, height + 37, max(MIN_SIDE, width - 27))
    second = (2, max(MIN_SIDE, height - 23), width + 51)
    return [first, second]


def verify(path: str | os.PathLike, model: nn.Module, sizes: Sequence[tuple[int, int, int]], *,
           tolerance: float = 1e-4, seed: int = 0, name: str | os.PathLike | None = None) -> float:
    """Run the ONNX file and PyTorch on random inputs of each (batch, h, w); returns the largest difference,
    or raises ``ExportError`` naming the output and size where ``|onnx - torch| > tol + tol * |torch|`` (and
    ``name``, default ``path``)."""
    session = onnx_session(path)
    name = name or path
    graph = ExportGraph(model.eval(), model_kind(model))
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for batch, h, w in sizes:
        x = torch.randn(batch, 3, h, w, generator=generator)
        with torch.inference_mode():
            expected = [t.float().cpu().numpy() for t in graph(x.to(next(model.parameters()).device))]
        got = session.run(None, {"pixel_values": x.numpy()})
        for out, a, b in zip([o.name for o in session.get_outputs()], got, expected):
            if a.shape != b.shape:
                raise ExportError(f"{name}: output {out} has shape {a.shape} at input {(batch, 3, h, w)}, PyTorch {b.shape}")
            excess = np.abs(a - b) - tolerance * (1 + np.abs(b))
            worst = max(worst, float(np.abs(a - b).max()))
            if not np.isfinite(a).all() or excess.max() > 0:
                raise ExportError(
                    f"{name}: ONNX Runtime differs from PyTorch by {float(np.abs(a - b).max()):.3g} in {out} at input "
                    f"{(batch, 3, h, w)} (tolerance {tolerance:g}); not written (an earlier file of that name is unchanged)"
                )
    return worst


def onnx_session(path: str | os.PathLike, threads: int | None = None, providers: Sequence | None = None):
    """An ONNX Runtime session for ``path`` (``providers``: default the CPU); a file that is not a readable ONNX
    model (truncated, another format) is one ValueError naming it."""
    require("onnxruntime")
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    if not Path(path).is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    options = ort.SessionOptions()
    # No busy-waiting between runs: spinning threads would take the CPU from PyTorch (or other processes)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]))
    except (state.InvalidProtobuf, state.InvalidGraph, state.Fail, state.NoSuchFile, state.InvalidArgument) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path} is not a readable ONNX model (truncated or another format?): {reason}") from e


def read_metadata(path: str | os.PathLike, session=None) -> dict:
    """The ``densepred`` JSON stored by ``export_onnx`` (task, outputs, preprocessing, class_names, config),
    read through ``session`` when one is open for ``path``."""
    props = (session or onnx_session(path)).get_modelmeta().custom_metadata_map
    if "densepred" not in props:
        raise ValueError(f"{path}: no densepred metadata (not written by tools/export.py)")
    return json.loads(props["densepred"])


class _OnnxModule(nn.Module):
    """The ONNX file standing in for the PyTorch model: ``forward(pixel_values)`` returns what the model's
    ``forward`` returns (the tensor of a one-output task; a dict by output name otherwise and for backbones)."""

    def __init__(self, session, info: dict):
        super().__init__()
        self.session, self.info = session, info
        self.task = info["task"]
        self.preprocessing = Preprocessing.from_dict(info["preprocessing"])
        names = info.get("class_names")
        self.class_names = tuple(names) if names is not None else None
        self.num_classes = len(names) if names is not None else None

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def forward(self, pixel_values: torch.Tensor):
        x = pixel_values.detach().float().cpu().numpy()
        outs = [torch.from_numpy(o) for o in self.session.run(None, {"pixel_values": x})]
        if self.task == BACKBONE or len(outs) > 1:
            return dict(zip(self.info["outputs"], outs))
        return outs[0]


class OnnxPredictor:
    """``load_onnx_predictor(path)``: ``.task``, ``.class_names``, ``.preprocessing``, ``predictor(pixel_values)``
    (the model's forward) and ``predict(image_uint8_rgb, **options)``, which runs the task model class's own
    ``predict`` with the ONNX file in place of the network, so the two give the same result by construction."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        self.path = Path(path)
        session = onnx_session(path, threads)
        info = read_metadata(path, session)
        if info["task"] != BACKBONE and not import_task(info["task"], info.get("module")):
            raise ValueError(f"{path}: task {info['task']!r} is not registered (registered: {', '.join(list_tasks())})")
        self.module = _OnnxModule(session, info)
        self.task = self.module.task
        self.class_names = self.module.class_names
        self.preprocessing = self.module.preprocessing

    def __call__(self, pixel_values: torch.Tensor):
        return self.module(pixel_values)

    def predict(self, image: np.ndarray, **options):
        if self.task == BACKBONE:
            raise ValueError(f"{self.path}: a backbone has no predict; call the predictor on pixel_values")
        return get_task_spec(self.task).model.predict(self.module, image, **options)


def load_onnx_predictor(path: str | os.PathLike, threads: int | None = None) -> OnnxPredictor:
    return OnnxPredictor(path, threads)
