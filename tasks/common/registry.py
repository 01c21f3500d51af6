"""The task registry: each task package declares one ``TaskSpec`` and registers it; shared code looks it up.

A task is one package under ``tasks/`` (or anywhere importable). Its ``__init__.py`` ends with::

    register_task(TaskSpec(
        name="segmentation",                      # the config's ``task`` and the checkpoint's meta["task"]
        task=SegmentationTask,                    # the engine's class (tasks.common.task.Task)
        model=SegFormer,                          # the TaskModel subclass (from_pretrained, predict, export)
        model_options=SegFormerModel,             # the config's model section (a dataclass)
        picture=save_prediction_png,              # tools/infer.py's picture of model.predict(image)
        export_outputs=("logits",),               # ONNX output names, in the order model.export_forward returns
        releases=(Release(ADE20KData, "ADE20K (SceneParse150)", (20_210, 2_000), "..."),),  # check_data
        summarize=summarize_samples,              # check_data's per-split "sizes and targets" column
        published=PUBLISHED,                      # short name -> PublishedModel (the model zoo)
        predict_options=("flip",),                # tools/infer.py options passed to model.predict
        int8=Int8Spec(pixel_agreement, "pixel agreement", 0.95),  # --int8: the check and what stays float
        benchmark=ExportBenchmark({"backbone": "pvt_v2_b2", "num_classes": 150}, (512, 512)),  # benchmarks.export
    ))

and ``tasks/__init__.py`` imports the package (one line). That is all adding a task takes: no table keyed
by task names elsewhere, no ``if task == ...`` in shared code. A package outside ``tasks/`` (e.g.
``tests/tasks/fifth_task``) registers the same way when a config file imports it; our checkpoints and ONNX
files record the model's module (``meta["module"]``), and ``import_task`` imports it when one is loaded.

Lookups: ``get_task_spec(name)``, ``list_tasks()``, ``task_specs()``, ``build_task(cfg)`` (the engine's task
object for a config, after checking its model section), ``import_task(name, module)``.

Fields (all but ``name``, ``task`` and ``model`` optional):

- ``name``: the task's name, written in configs (``Config.task``), checkpoints and ONNX metadata.
- ``task``: the ``Task`` subclass the engine drives; its ``data_types`` are the config's data sections.
- ``model``: the ``TaskModel`` subclass; ``model.task`` must equal ``name``. Its ``from_pretrained`` reads
  checkpoints, its ``predict`` takes a raw image, its ``export_forward`` / ``for_export`` shape the ONNX graph.
- ``model_options``: the dataclass of the config's model section; ``TaskModel.build`` checks it against the
  model's constructor (``model.options_not_passed`` names the fields that are not constructor arguments).
- ``picture``: ``picture(path, image, prediction, *, class_names, **options)`` writes one PNG (tools/infer.py).
- ``export_outputs``: the ONNX graph's output names; ``model.export_forward(pixel_values)`` returns a tuple of
  tensors in this order. One output: an ONNX-backed predictor returns that tensor; several: a dict by name.
- ``releases``: ``tasks.common.check_data.Release`` entries: the official datasets (data section class, counts
  per split, contents) that ``tools/check_data.py`` compares a dataset on disk with.
- ``summarize``: ``summarize(samples, dataset) -> list[str]``: what the untransformed samples' targets hold
  (check_data's table; the image sizes are shared).
- ``checks``: a ``tasks.common.check_data.DataChecks``: the task's own checks of its data (one split's layout,
  the splits against each other and the config, one decoded sample), run by ``tools/check_data.py``; the
  layout ones also at training start-up.
- ``published``: ``{short name: tasks.common.zoo.PublishedModel}``, names ``from_pretrained`` accepts.
- ``predict_options`` / ``picture_options``: the ``tools/infer.py`` options (``flip``, ``threshold``) this task
  passes to ``model.predict`` / to ``picture``; an option the task does not take is refused in one line.
- ``int8``: ``tasks.common.quantize.Int8Spec``: ``tools/export.py --int8``'s agreement check against fp32 (metric
  and bar) and what stays in float (op types, module paths); None: the task has no INT8 export.
- ``benchmark``: ``tasks.common.export.ExportBenchmark``: the recipe's model (constructor arguments) and input
  size that ``tools/benchmarks/export.py`` times.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from .check_data import DataChecks, Release
    from .export import ExportBenchmark
    from .quantize import Int8Spec
    from .zoo import PublishedModel


@dataclass(frozen=True)
class TaskSpec:
    """Everything the shared code and the tools need from one task (see the module docstring)."""

    name: str
    task: type
    model: type
    model_options: type | None = None
    picture: Callable[..., None] | None = None
    export_outputs: tuple[str, ...] = ()
    releases: tuple["Release", ...] = ()
    summarize: Callable[[list, Any], list[str]] | None = None
    checks: "DataChecks | None" = None
    published: Mapping[str, "PublishedModel"] = field(default_factory=dict)
    predict_options: tuple[str, ...] = ()
    picture_options: tuple[str, ...] = ()
    int8: "Int8Spec | None" = None
    benchmark: "ExportBenchmark | None" = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"TaskSpec.name must be an identifier-like str, got {self.name!r}")
        for attr in ("task", "model"):
            if not isinstance(getattr(self, attr), type):
                raise TypeError(f"TaskSpec({self.name!r}).{attr} must be a class, got {getattr(self, attr)!r}")
        if getattr(self.model, "task", None) != self.name:
            raise ValueError(
                f"TaskSpec({self.name!r}): {self.model.__name__}.task is {getattr(self.model, 'task', None)!r}, "
                f"expected {self.name!r}"
            )
        object.__setattr__(self, "export_outputs", tuple(self.export_outputs))
        object.__setattr__(self, "releases", tuple(self.releases))
        object.__setattr__(self, "published", MappingProxyType(dict(self.published)))

    @property
    def data_options(self) -> tuple[type, ...]:
        """The config's data sections this task reads (its ``Task.data_types``)."""
        return tuple(getattr(self.task, "data_types", ()))


_SPECS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add ``spec`` to the registry; a duplicate name or short name is a ValueError."""
    if not isinstance(spec, TaskSpec):
        raise TypeError(f"register_task: expected a TaskSpec, got {type(spec).__name__}")
    if spec.name in _SPECS:
        raise ValueError(f"register_task: a task named {spec.name!r} is already registered")
    for other in _SPECS.values():
        taken = sorted(set(spec.published) & set(other.published))
        if taken:
            raise ValueError(f"register_task({spec.name!r}): short names {', '.join(taken)} are {other.name}'s already")
    _SPECS[spec.name] = spec
    return spec


def unregister_task(name: str) -> None:
    """Remove a task (for tests that register a throw-away one)."""
    _SPECS.pop(name, None)


def get_task_spec(name: str) -> TaskSpec:
    """The spec registered as ``name``; an unknown name is a ValueError listing the registered ones."""
    if name not in _SPECS:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(list_tasks())}")
    return _SPECS[name]


def build_task(cfg):
    """The engine's task object for a config (``cfg.task``, a registered name); the model section is checked
    first (a misspelt or stale field is a ValueError naming it and the valid ones)."""
    spec = get_task_spec(cfg.task)
    if spec.model_options is not None and not isinstance(cfg.model, spec.model_options):
        raise TypeError(f"model must be {spec.model_options.__name__} for task {spec.name!r}, got {type(cfg.model).__name__}")
    spec.model.check_options(cfg.model)
    return spec.task(cfg)


def list_tasks() -> list[str]:
    return sorted(_SPECS)


def task_specs() -> list[TaskSpec]:
    """Every registered spec, in registration order."""
    return list(_SPECS.values())


def import_task(name: str, module: object) -> bool:
    """Import ``module``, the module that defines task ``name``'s model (stored as ``meta["module"]`` in our
    checkpoints and ONNX files), so a task defined outside ``tasks/`` loads from its checkpoint alone; True if
    ``name`` is then registered. Nothing is imported for a registered task, and only a dotted module name
    importable from ``sys.path`` is (never a file path): a checkpoint can only pick code that is installed."""
    if name in _SPECS:
        return True
    if not isinstance(module, str) or not all(part.isidentifier() for part in module.split(".")):
        return False
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return name in _SPECS

