"""Checkpoints that survive being killed at any moment: write to a temporary file, fsync, rename."""
from __future__ import annotations

import json
import os
import pickle
import random
import re
from pathlib import Path
from typing import Mapping

import numpy as np
import torch


class WriteError(OSError):
    """A file could not be written (disk full, read-only, quota ...); the previous version is unchanged."""

    def __init__(self, path: str | Path, cause: OSError):
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror} (the previous file, if any, is unchanged)"


_TEMP = re.compile(r"^\.(?P<name>.+)\.tmp(?P<pid>\d+)$")


def _write_atomic(path: str | Path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync, then rename it over ``path``:
    readers only ever see the old or the complete new file, even if the process is killed mid-write.
    On any failure the temporary file is removed; an OSError becomes a ``WriteError`` naming ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)  # a half-written file would keep a full disk full
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise WriteError(path, e) from e
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files (``.<name>.tmp<pid>``) that processes which no longer run left in
    ``folder`` (killed mid-write); a live process's file is kept. Returns the removed paths."""
    removed = []
    for p in Path(folder).glob(".*.tmp*") if Path(folder).is_dir() else ():
        match = _TEMP.match(p.name)
        if match and p.is_file() and not _alive(int(match["pid"])):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def save_atomic(obj, path: str | Path) -> None:
    _write_atomic(path, lambda f: torch.save(obj, f))


def write_text_atomic(path: str | Path, text: str) -> None:
    _write_atomic(path, lambda f: f.write(text.encode()))


def load(path: str | Path) -> dict:
    """A checkpoint as a dict (``torch.load`` with ``weights_only=True``). A missing file is a
    FileNotFoundError, an unreadable one (truncated, not a checkpoint) a ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path} is not a readable checkpoint (truncated or not written by torch.save): {reason}") from e
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a checkpoint dict")
    return state


def rng_state() -> dict:
    """Every random generator training touches, in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def our_model_config(meta: Mapping, task: str, source) -> dict:
    """The model config stored in our checkpoint's ``meta`` (``{"task": ..., "model": config}``), checked."""
    if meta.get("task") != task:
        raise ValueError(f"{source} is a checkpoint for task {meta.get('task')!r}, not {task!r}")
    if not isinstance(meta.get("model"), Mapping):
        raise ValueError(f"{source}: meta['model'] must be the model's config dict, got {type(meta.get('model')).__name__}")
    return dict(meta["model"])


def read_model_file(path: Path, task: str) -> tuple[dict, dict | None, Mapping | None]:
    """A weights file -> ``(state_dict, model config or None, meta or None)``.

    Our checkpoints (``{"model": state_dict, "meta": {"task", "model"}}``, from ``tools/train.py``) carry their
    config; for any other file (a bare or nested state dict, ``.safetensors``) it is None and the caller
    looks for one elsewhere (a ``config.json`` beside it, the weight shapes).
    """
    from backbones import read_state_dict

    obj = None
    if path.suffix.lower() in (".pth", ".pt", ".bin", ".ckpt"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
            raise ValueError(f"cannot read {path} with torch.load(weights_only=True): {e}") from e
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


def read_config_json(
    path: Path, task: str, model_type: str, architecture: str | None = None, head: str = "task head"
) -> tuple[dict | None, dict | None]:
    """A ``config.json`` (in a Hugging Face folder or beside a weights file) -> ``(our model config, None)``
    for ours (``{"task": ..., "model": config}``) or ``(None, the Hugging Face config dict)``, checked to be of
    ``model_type`` (and to list ``architecture`` when it names its architectures)."""
    if not path.is_file():
        raise ValueError(f"{path.parent} is not a Hugging Face model folder: config.json is missing")
    cfg = json.loads(path.read_text())
    if "task" in cfg:
        return our_model_config(cfg, task, path), None
    if cfg.get("model_type") != model_type:
        raise ValueError(f"{path} describes a {cfg.get('model_type')!r} model; expected model_type {model_type!r}")
    architectures = cfg.get("architectures") or [architecture]
    if architecture is not None and architecture not in architectures:
        raise ValueError(
            f"{path.parent} holds a {', '.join(architectures)} without a {head}; expected {architecture} "
            "(for the encoder alone use backbones.build_backbone(name, weights=...))"
        )
    return None, cfg


def read_pretrained(path, task: str, config_from_json, config_from_weights=None, other: str = "") -> tuple[dict, dict]:
    """``(state_dict, model config)`` for a model's ``from_pretrained``: a Hugging Face folder, our checkpoint,
    or a bare weights file whose config is a ``config.json`` beside it or, via ``config_from_weights(state_dict,
    meta)`` (None when it cannot tell), the weights themselves; ``other`` names that last kind in errors."""
    from backbones import read_state_dict

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"from_pretrained: {p} does not exist")
    if p.is_dir():
        return read_state_dict(p), config_from_json(p / "config.json")
    state_dict, config, meta = read_model_file(p, task)
    if config is None and (p.parent / "config.json").is_file():
        config = config_from_json(p.parent / "config.json")
    if config is None and config_from_weights is not None:
        config = config_from_weights(state_dict, meta)
    if config is None:
        raise ValueError(
            f"{p} is a bare state dict and no model configuration was found: expected our checkpoint "
            f'({{"model": ..., "meta": {{"task": "{task}", "model": config}}}}), a config.json beside it'
            + (f", or {other}" if other else "")
        )
    return state_dict, config


def load_strict(model, weights, source) -> None:
    """Load ``weights`` (``backbones.weights.ConvertedWeights``) after checking every key and shape, so a
    failure names them all (``check_state_dict``) instead of torch's first mismatch."""
    from backbones.weights import check_state_dict

    check_state_dict(model, weights, str(source))
    model.load_state_dict(weights.state_dict, strict=False)


def load_model_weights(model, pretrained) -> None:
    """Initialise ``model`` from ``pretrained`` (a model of the same architecture), strictly."""
    from backbones.weights import ConvertedWeights

    load_strict(model, ConvertedWeights(pretrained.state_dict(), {}, [], "ours", ""), "model.weights")
