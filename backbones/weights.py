"""Reading weights from disk and loading them strictly into a backbone.

Files: ``.pth``/``.pt``/``.bin``/``.ckpt`` (``torch.load(weights_only=True)``; a ``model`` or ``state_dict``
entry is unwrapped), ``.safetensors``, or a Hugging Face model folder (``config.json`` with
``model.safetensors``, ``pytorch_model.bin`` or a sharded index). Key formats are converted by the
backbone's ``convert_state_dict``; loading is strict and every failure names keys and shapes.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

logger = logging.getLogger(__name__)

_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_HF_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SHOW = 8  # keys listed per category in error messages


@dataclass
class ConvertedWeights:
    """A state dict renamed into our keys, with where each key came from and what was left out."""

    state_dict: dict[str, torch.Tensor]
    origin: dict[str, str]
    dropped: list[str]
    format: str
    prefix: str


def find_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> tuple[dict, list[str]]:
    """Split keys into those under ``prefix`` (returned without it) and the rest."""
    inner = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    return inner, [k for k in state_dict if not k.startswith(prefix)]


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a flat ``{key: Tensor}`` from a weights file, a Hugging Face model folder (a timm hub folder too:
    ``config.json`` with ``architecture``) or a hub id ``org/name[@revision]`` (see ``backbones.hub``)."""
    from .hub import resolve

    p = resolve(path)  # an existing local path wins; a hub id becomes its cached snapshot folder
    if p.is_dir():
        return _read_folder(p)
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except (SafetensorError, OSError) as e:  # a truncated, foreign or random-bytes file
            raise ValueError(f"cannot read {p} as safetensors: {e}") from e
    if suffix in _TORCH_SUFFIXES:
        return _unwrap(load_torch_file(p), p)
    raise ValueError(
        f"unsupported weights file {p.name!r}: expected {', '.join(_TORCH_SUFFIXES)}, .safetensors "
        "or a Hugging Face model folder"
    )


def load_torch_file(path: Path):
    """``torch.load(weights_only=True)`` of a ``.pth``/``.pt``/``.bin``/``.ckpt`` file (None for other suffixes);
    a truncated or foreign file is a ValueError naming it."""
    if path.suffix.lower() not in _TORCH_SUFFIXES:
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, AttributeError) as e:
        raise ValueError(f"cannot read {path} with torch.load(weights_only=True): {torch_load_reason(e)}") from e


def torch_load_reason(error: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in one line, without torch's advice to retry with
    ``weights_only=False`` (which runs arbitrary code from the file: never for a file one did not make)."""
    text = str(error)
    if "WeightsUnpickler error:" in text:  # the real reason follows torch's paragraph about the default
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation of torch.load", 1)[0]
    lines = [line.strip() for line in text.splitlines() if line.strip() and "weights_only" not in line]
    return lines[0] if lines else "not a file torch.save wrote (or it is truncated)"


def _unwrap(obj, p: Path) -> dict[str, torch.Tensor]:
    for key in ("model", "state_dict"):  # training checkpoints nest the weights
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping):
        raise ValueError(f"{p} does not hold a state dict (found {type(obj).__name__})")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{p} holds no tensors (top-level keys: {', '.join(map(str, list(obj)[:10]))})")
    return tensors


def _read_folder(p: Path) -> dict[str, torch.Tensor]:
    if not (p / "config.json").is_file():
        raise ValueError(f"{p} is a folder but not a Hugging Face model folder: config.json is missing")
    for name in _HF_WEIGHTS:
        if (p / name).is_file():
            return read_state_dict(p / name)
    for name in _HF_INDEXES:
        if (p / name).is_file():
            try:
                shards = sorted(set(json.loads((p / name).read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                raise ValueError(f"{p / name} is not a valid weights index (a JSON object with weight_map): {e}") from e
            out: dict[str, torch.Tensor] = {}
            for shard in shards:
                out.update(read_state_dict(p / shard))
            return out
    raise ValueError(f"{p} holds no weights: expected one of {', '.join(_HF_WEIGHTS + _HF_INDEXES)}")


def _listing(keys, origin: Mapping[str, str] | None = None) -> str:
    keys = list(keys)
    shown = [f"{k} (from {origin[k]})" if origin and origin.get(k, k) != k else k for k in keys[:_SHOW]]
    more = f", ... and {len(keys) - _SHOW} more" if len(keys) > _SHOW else ""
    return ", ".join(shown) + more


def check_state_dict(model: nn.Module, weights: ConvertedWeights, source: str) -> None:
    """Raise a ValueError naming every missing, unexpected and mis-shaped key, before anything is copied."""
    expected = model.state_dict()
    got = weights.state_dict
    # BatchNorm fills a missing num_batches_tracked itself (checkpoints with frozen BN lack it).
    missing = [k for k in expected if k not in got and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in got if k not in expected]
    mismatched = [k for k in expected if k in got and got[k].shape != expected[k].shape]
    if not (missing or unexpected or mismatched):
        return
    name = getattr(model, "name", type(model).__name__)
    lines = [f"cannot load {source} into {name} (detected key format: {weights.format}, prefix {weights.prefix!r}):"]
    if missing:
        lines.append(f"  {len(missing)} missing keys: {_listing(missing)}")
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected keys: {_listing(unexpected, weights.origin)}")
    if mismatched:
        shapes = [
            f"{k}: weights {tuple(got[k].shape)} vs model {tuple(expected[k].shape)}" for k in mismatched[:_SHOW]
        ]
        more = f"\n    ... and {len(mismatched) - _SHOW} more" if len(mismatched) > _SHOW else ""
        lines.append(f"  {len(mismatched)} shape mismatches:\n    " + "\n    ".join(shapes) + more)
    hint = model.load_hint(got) if hasattr(model, "load_hint") else ""
    if hint:
        lines.append(f"  hint: {hint}")
    raise ValueError("\n".join(lines))


def load_backbone_weights(model: nn.Module, path: str | os.PathLike) -> ConvertedWeights:
    """Read, convert and strictly load weights into ``model``; returns what was loaded and dropped.

    ``path`` is a local file or folder, a hub id, or ``"imagenet"``: the published ImageNet-1K weights of the
    model's registered name (``backbones.hub.IMAGENET_WEIGHTS``). The keyword wins over a local folder of
    that name (often the ImageNet data set itself); write ``./imagenet`` to mean the folder.
    """
    if isinstance(path, str) and path == "imagenet":
        from .hub import imagenet_weights

        path = imagenet_weights(getattr(model, "name", type(model).__name__))
    weights = model.convert_state_dict(read_state_dict(path))
    check_state_dict(model, weights, str(path))
    model.load_state_dict(weights.state_dict, strict=False)  # strictness was checked above, with better messages
    logger.info("loaded %s weights from %s (key format: %s)", getattr(model, "name", ""), path, weights.format)
    if weights.dropped:
        logger.info("dropped %d keys not used by the backbone: %s", len(weights.dropped), _listing(weights.dropped))
    return weights


def save_backbone_weights(model: nn.Module, path: str | os.PathLike, **meta: str) -> None:
    """Write ``model``'s weights in our format: ``.safetensors`` (with metadata) or ``.pth``."""
    p = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": "densepred-backbone", "backbone": getattr(model, "name", type(model).__name__), **meta}
    tmp = p.with_name(p.name + ".tmp")
    if p.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(tmp), metadata=meta)
    elif p.suffix in (".pth", ".pt"):
        torch.save({"model": state, "meta": meta}, tmp)
    else:
        raise ValueError(f"output must end in .safetensors, .pth or .pt, got {p.name!r}")
    os.replace(tmp, p)


class RenameRules:
    """Ordered ``(regex, replacement)`` rules for state-dict keys, applied the same way everywhere (backbone and
    task converters): every rule is tried in order on the key as the earlier rules left it, and replaces at
    most its first match (``re.sub(count=1)``). Anchor a rule (``^...``) when it must see the original key;
    a key that no rule matches keeps its name."""

    def __init__(self, rules):
        self.rules = [(re.compile(pattern), repl) for pattern, repl in rules]

    def __call__(self, key: str) -> str:
        for pattern, repl in self.rules:
            key = pattern.sub(repl, key, count=1)
        return key
