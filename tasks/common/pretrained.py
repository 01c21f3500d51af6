"""One ``from_pretrained`` pipeline for every task model: read -> detect the format -> config -> rename -> strict load.

A task declares what it can read in a ``TaskWeights`` table (its ``weights.py``): the Hugging Face
``model_type`` and architectures it accepts and how their ``config.json`` maps to our constructor arguments,
the rename rules for the keys outside the backbone (the backbone converts its own), and the original
releases it recognises from the weights alone. Everything else — our checkpoints, hub ids, bare files with
a ``config.json`` beside them, strict loading with errors that name every key — is shared here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from backbones.weights import ConvertedWeights, RenameRules, check_state_dict, load_torch_file, read_state_dict

from .zoo import resolve


@dataclass(frozen=True)
class OriginalFormat:
    """A release recognised from its keys alone (no config.json): ``detect(state_dict)``, then
    ``config(state_dict, meta)`` reads the architecture from the weights' shapes."""

    description: str
    detect: Callable[[Mapping[str, torch.Tensor]], bool]
    config: Callable[[Mapping[str, torch.Tensor], Mapping | None], dict]


@dataclass(frozen=True)
class TaskWeights:
    """What a task model can load. ``config_from_hf(cfg, source)`` maps a Hugging Face config dict to our
    constructor arguments (``config_from_timm`` likewise for timm hub folders); ``head_rules`` rename the keys
    the backbone's converter leaves over; keys starting with ``unused`` are dropped (they exist in a format
    but are never run); ``finish(out, origin, model)`` may rewrite the converted dict in place (fusing
    projections, tying heads)."""

    task: str
    hf_model_types: tuple[str, ...]
    hf_architectures: tuple[str, ...]
    config_from_hf: Callable[[Mapping, Path], dict]
    head_rules: RenameRules
    originals: tuple[OriginalFormat, ...] = ()
    unused: tuple[str, ...] = ()
    finish: Callable[[dict, dict, torch.nn.Module], None] | None = None
    config_from_timm: Callable[[Mapping, Path], dict] | None = None
    to_transformers: Callable[[torch.nn.Module], object] | None = None


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; a 0-byte or malformed file is a ValueError naming it."""
    try:
        value = json.loads(Path(path).read_text())
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not a text JSON file: {e}") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from e
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(value).__name__}")
    return value


def our_model_config(meta: Mapping, task: str, source) -> dict:
    """The model config stored in our checkpoint's ``meta`` (``{"task": ..., "model": config}``), checked."""
    if meta.get("task") != task:
        raise ValueError(f"{source} is a checkpoint for task {meta.get('task')!r}, not {task!r}")
    if not isinstance(meta.get("model"), Mapping):
        raise ValueError(f"{source}: meta['model'] must be the model's config dict, got {type(meta.get('model')).__name__}")
    return dict(meta["model"])


def read_config(path: Path, spec: TaskWeights) -> dict:
    """A ``config.json`` (ours, Hugging Face or timm) -> our constructor arguments."""
    if not path.is_file():
        raise ValueError(f"{path.parent} is not a model folder: config.json is missing")
    return config_from_json(read_json(path), path, spec)


def config_from_json(cfg: Mapping, path: Path, spec: TaskWeights) -> dict:
    """A ``config.json``'s content (ours, Hugging Face or timm; read from ``path``) -> our constructor arguments."""
    if "task" in cfg:
        return our_model_config(cfg, spec.task, path)
    if "architecture" in cfg and "model_type" not in cfg and spec.config_from_timm is not None:
        return spec.config_from_timm(cfg, path)
    if cfg.get("model_type") not in spec.hf_model_types:
        raise ValueError(
            f"{path} describes a {cfg.get('model_type') or cfg.get('architecture')!r} model; the {spec.task} models "
            f"read model_type {' / '.join(spec.hf_model_types)}"
        )
    architectures = cfg.get("architectures") or []
    if spec.hf_architectures and architectures and not set(architectures) & set(spec.hf_architectures):
        raise ValueError(
            f"{path.parent} holds a {', '.join(architectures)} without a {spec.task} head; expected "
            f"{' / '.join(spec.hf_architectures)} (for the encoder alone use backbones.build_backbone(name, weights=...))"
        )
    return spec.config_from_hf(cfg, path)


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read once: ``path`` (the local file or folder), ``obj`` (what ``torch.load`` gave for a
    torch file; None for a folder or a safetensors file) and the folder's ``config.json``. ``open_checkpoint``
    makes it; ``tasks.load_pretrained`` finds the task from it and hands it to ``from_pretrained``."""

    path: Path
    obj: object = None
    folder_config: dict | None = None

    @property
    def meta(self) -> Mapping | None:
        """Our checkpoint's ``meta`` (``{"task": ..., "model": config, ...}``), else None."""
        meta = self.obj.get("meta") if isinstance(self.obj, Mapping) else None
        return meta if isinstance(meta, Mapping) else None

    def beside_config(self) -> tuple[dict, Path] | None:
        """The ``config.json`` beside a weights file, if any."""
        path = self.path.parent / "config.json"
        return (read_json(path), path) if not self.path.is_dir() and path.is_file() else None


def open_checkpoint(path, task: str | None = None) -> Checkpoint:
    """Resolve ``path`` (``tasks.common.zoo.resolve``: a local path, short name or hub id; ``task`` refuses another
    task's short name) and read it once. An existing ``Checkpoint`` is returned as it is."""
    if isinstance(path, Checkpoint):
        return path
    p = resolve(path, task)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ValueError(f"{p} is a folder but not a model folder: config.json is missing")
        return Checkpoint(p, None, read_json(p / "config.json"))
    return Checkpoint(p, load_torch_file(p))


def _file_weights(ck: Checkpoint, task: str) -> tuple[dict, dict | None]:
    """A weights file -> ``(state_dict, our model config or None)``."""
    obj, meta = ck.obj, ck.meta
    if meta is not None and "task" in meta:
        return _tensors(obj.get("model"), ck.path), our_model_config(meta, task, ck.path)
    if isinstance(obj, Mapping):  # a bare or nested ("state_dict" in mmseg, "model") state dict
        return _tensors(obj.get("state_dict", obj.get("model", obj)), ck.path), None
    return read_state_dict(ck.path), None


def _tensors(obj, path: Path) -> dict:
    if not isinstance(obj, Mapping) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict (found {type(obj).__name__} without tensors)")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def read_pretrained(path, spec: TaskWeights) -> tuple[dict, dict, Path]:
    """``(state_dict, model config, local path)`` for ``path`` (anything ``open_checkpoint`` takes): a model
    folder, our checkpoint, or a bare weights file whose config is a ``config.json`` beside it or (an original
    release) read from the weights."""
    ck = open_checkpoint(path, spec.task)
    p = ck.path
    if p.is_dir():
        config = config_from_json(ck.folder_config, p / "config.json", spec)  # before the weights: fail early
        return read_state_dict(p), config, p
    state_dict, config = _file_weights(ck, spec.task)
    beside = ck.beside_config() if config is None else None
    if beside is not None:
        config = config_from_json(*beside, spec)
    for original in spec.originals if config is None else ():
        if original.detect(state_dict):
            config = original.config(state_dict, ck.meta)
            break
    if config is None:
        others = "".join(f", or {o.description}" for o in spec.originals)
        raise ValueError(
            f"{p} is a bare state dict and no model configuration was found: expected our checkpoint "
            f'({{"model": ..., "meta": {{"task": "{spec.task}", "model": config}}}}), a config.json beside it{others}'
        )
    return state_dict, config, p


def convert(state_dict: Mapping[str, torch.Tensor], spec: TaskWeights, model) -> ConvertedWeights:
    """Rename ``state_dict`` into ``model``'s keys: the backbone's converter takes the encoder (any published
    format, any prefix); ``spec.head_rules`` rename what it leaves; keys that no rule knows keep their name, so
    the strict load reports them as unexpected."""
    encoder = model.backbone.convert_state_dict(state_dict)
    out = {f"backbone.{k}": v for k, v in encoder.state_dict.items()}
    origin = {f"backbone.{k}": o for k, o in encoder.origin.items()}
    dropped = []
    for key in encoder.dropped:
        if key.startswith(spec.unused):
            dropped.append(key)
            continue
        new = spec.head_rules(key)
        if new in out and not torch.equal(out[new], state_dict[key]):
            raise ValueError(f"{origin[new]} and {key} are copies of one weight but hold different values")
        out[new], origin[new] = state_dict[key], key
    if spec.finish is not None:
        spec.finish(out, origin, model)
    return ConvertedWeights(out, origin, dropped, encoder.format, encoder.prefix)


def load_strict(model, weights: ConvertedWeights, source) -> None:
    """Load ``weights`` after checking every key and shape, so a failure names them all."""
    check_state_dict(model, weights, str(source))
    model.load_state_dict(weights.state_dict, strict=False)


def load_model_weights(model, pretrained, keep: Mapping[str, torch.Tensor] | None = None) -> None:
    """Initialise ``model`` from ``pretrained`` (a model of the same architecture), strictly; ``keep`` are
    tensors used instead of the pretrained ones (the model's own, for class-dependent tensors)."""
    state = {**pretrained.state_dict(), **(keep or {})}
    load_strict(model, ConvertedWeights(state, {}, [], "ours", ""), "model.weights")


def class_names_from_hf(cfg: Mapping, num_classes: int) -> tuple[str, ...] | None:
    """``id2label`` as a tuple of names (None for transformers' ``LABEL_i`` placeholders or a wrong count)."""
    if not cfg.get("id2label"):
        return None
    labels = {int(k): str(v) for k, v in cfg["id2label"].items()}
    names = tuple(labels.get(i, "") for i in range(len(labels)))
    if names == tuple(f"LABEL_{i}" for i in range(len(names))) or len(names) != num_classes:
        return None
    return names


def hf_num_labels(cfg: Mapping) -> int:
    """transformers leaves defaults out of config.json: no ``id2label``/``num_labels`` means its default of 2."""
    return cfg.get("num_labels") or len(cfg.get("id2label") or {}) or 2


def check_names(names: Sequence[str] | None, count: int, who: str) -> tuple[str, ...] | None:
    if names is None:
        return None
    if isinstance(names, str) or len(names) != count:
        raise ValueError(f"{who}: class_names must be a sequence of num_classes={count} names, got {names!r}")
    return tuple(str(n) for n in names)
