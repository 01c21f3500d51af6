"""Weights named by Hugging Face hub id: ``org/name`` or ``org/name@revision`` -> a local folder.

An existing local path always wins. Anything else shaped like a hub id goes through
``huggingface_hub.snapshot_download`` and its cache (``HF_HUB_CACHE``, read at call time): downloaded once
when online, read from the cache when ``HF_HUB_OFFLINE=1`` or the network is down. Only the config and
one weights format are fetched (safetensors, else ``pytorch_model.bin``), never the TF/Flax/ONNX files.
Every failure is one ``FileNotFoundError`` line naming the id and how to get the files.

``IMAGENET_WEIGHTS`` names the canonical ImageNet-1K release of each registered backbone; pass
``weights="imagenet"`` to ``build_backbone`` to load it.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

# The published ImageNet-1K weights of each registered backbone (PvtV2ForImageClassification,
# SegformerForImageClassification, and torchvision's ResNet-50 as re-published by timm: the weights the
# Deformable-DETR paper used).
IMAGENET_WEIGHTS: dict[str, str] = {
    **{f"pvt_v2_b{i}": f"OpenGVLab/pvt_v2_b{i}" for i in range(6)},
    "pvt_v2_b2_li": "OpenGVLab/pvt_v2_b2_linear",
    **{f"mit_b{i}": f"nvidia/mit-b{i}" for i in range(6)},
    "resnet50": "timm/resnet50.tv_in1k",
}

# org/name[@revision]; the optional "hf-hub:" prefix is timm's spelling of the same thing.
_HUB_ID = re.compile(r"^(?:hf-hub:)?([A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@([\w./-]+))?$")
# A name ending like a weights file is a local path that does not exist, not a repository.
_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors", ".json", ".onnx")
_CONFIGS = ["config.json", "preprocessor_config.json"]
_SAFETENSORS = ["model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors"]
_TORCH_BIN = ["pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*-of-*.bin"]
_OFFLINE_VALUES = {"1", "true", "yes", "on"}


def parse_hub_id(path_or_id: str) -> tuple[str, str | None] | None:
    """``(repo_id, revision or None)`` when ``path_or_id`` is shaped like a hub id, else None."""
    if path_or_id.lower().endswith(_FILE_SUFFIXES):
        return None
    m = _HUB_ID.match(path_or_id)
    return (m[1], m[2]) if m else None


def imagenet_weights(name: str) -> str:
    """The hub id of the published ImageNet-1K weights of backbone ``name``."""
    if name not in IMAGENET_WEIGHTS:
        raise ValueError(
            f"weights='imagenet': no published ImageNet weights are known for backbone {name!r}; "
            f"known: {', '.join(sorted(IMAGENET_WEIGHTS))}"
        )
    return IMAGENET_WEIGHTS[name]


def resolve(path_or_id: str | os.PathLike) -> Path:
    """A local path (returned as is when it exists) or a hub id -> the local file or snapshot folder."""
    if not isinstance(path_or_id, (str, os.PathLike)):
        raise TypeError(f"weights must be a path or a hub id (str or os.PathLike), got {type(path_or_id).__name__}")
    local = Path(path_or_id).expanduser()
    if local.exists():
        return local
    parsed = parse_hub_id(os.fspath(path_or_id)) if isinstance(path_or_id, str) else None
    if parsed is None:
        raise FileNotFoundError(
            f"weights not found: {os.fspath(path_or_id)} is not an existing file or folder (nor a Hugging Face "
            "hub id of the form org/name[@revision])"
        )
    return _download(*parsed)


def _download(repo_id: str, revision: str | None) -> Path:
    name = repo_id + (f"@{revision}" if revision else "")
    get = f"`{_cli()} download {repo_id}{f' --revision {revision}' if revision else ''}`, or pass a local path"
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FileNotFoundError(
            f"{name} is not a local path and looks like a Hugging Face hub id, but huggingface_hub is not "
            f"installed: pip install huggingface_hub, then {get}"
        ) from None
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _OFFLINE_VALUES
    kwargs = dict(repo_id=repo_id, revision=revision, cache_dir=os.environ.get("HF_HUB_CACHE") or None)
    try:
        folder = Path(snapshot_download(allow_patterns=_CONFIGS + _SAFETENSORS, local_files_only=offline, **kwargs))
        if not _has_weights(folder):  # older repositories publish pytorch_model.bin only
            folder = Path(snapshot_download(allow_patterns=_CONFIGS + _TORCH_BIN, local_files_only=offline, **kwargs))
    except Exception as e:  # the library's errors differ across versions; each becomes one line
        raise FileNotFoundError(f"{name}: {_reason(e, offline)}; to get the files: {get}") from e
    if not _has_weights(folder):
        raise FileNotFoundError(
            f"{name}: the cached snapshot {folder} holds no model.safetensors or pytorch_model.bin (an incomplete "
            f"download?); to get the files: {get}"
        )
    return folder


def _cli() -> str:
    """The download command of the installed huggingface_hub: ``hf`` since 0.34 (``huggingface-cli`` before)."""
    try:
        from huggingface_hub import __version__
    except ImportError:
        return "hf"
    major, minor = (int(p) if p.isdigit() else 0 for p in __version__.split(".")[:2])
    return "hf" if (major, minor) >= (0, 34) else "huggingface-cli"


def _has_weights(folder: Path) -> bool:
    return any(next(folder.glob(pattern), None) is not None for pattern in _SAFETENSORS + _TORCH_BIN)


def _reason(error: Exception, offline: bool) -> str:
    kind = type(error).__name__
    if kind in ("RepositoryNotFoundError", "GatedRepoError"):
        return f"no such public repository on the Hugging Face hub (or it is gated and needs `{_cli()} auth login`)"
    if kind == "RevisionNotFoundError":
        return "the repository has no such revision"
    if offline:
        return "not in the Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading it"
    if kind in ("LocalEntryNotFoundError", "IncompleteSnapshotError"):
        return "not in the Hugging Face cache and the hub could not be reached"
    return f"download failed ({kind}: {str(error).splitlines()[0] if str(error) else 'no message'})"
