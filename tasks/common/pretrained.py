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


def resolve(path, task: str | None = None) -> Path:
    """A local path, the short name of a published model (``tasks.common.zoo``, e.g. ``"segformer-b0-ade"``) or a
    Hugging Face hub id, as the local file or snapshot folder to read; ``task`` refuses another task's short name."""
    from .zoo import resolve as zoo_resolve

    return zoo_resolve(path, task)


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
    cfg = read_json(path)
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


def read_model_file(path: Path, task: str) -> tuple[dict, dict | None, Mapping | None]:
    """A weights file -> ``(state_dict, our model config or None, meta or None)``."""
    obj = load_torch_file(path)
    meta = obj.get("meta") if isinstance(obj, Mapping) else None
    if isinstance(meta, Mapping) and "task" in meta:
        return _tensors(obj.get("model"), path), our_model_config(meta, task, path), meta
    if isinstance(obj, Mapping):  # a bare or nested ("state_dict" in mmseg, "model") state dict
        return _tensors(obj.get("state_dict", obj.get("model", obj)), path), None, meta
    return read_state_dict(path), None, meta


def _tensors(obj, path: Path) -> dict:
    if not isinstance(obj, Mapping) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict (found {type(obj).__name__} without tensors)")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def read_pretrained(path, spec: TaskWeights) -> tuple[dict, dict, Path]:
    """``(state_dict, model config, local path)`` for ``path``: a model folder, our checkpoint, or a bare weights
    file whose config is a ``config.json`` beside it or (an original release) read from the weights."""
    p = resolve(path, spec.task)
    if p.is_dir():
        config = read_config(p / "config.json", spec)  # first: a folder of another model fails before its weights load
        return read_state_dict(p), config, p
    state_dict, config, meta = read_model_file(p, spec.task)
    if config is None and (p.parent / "config.json").is_file():
        config = read_config(p.parent / "config.json", spec)
    for original in spec.originals if config is None else ():
        if original.detect(state_dict):
            config = original.config(state_dict, meta)
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
