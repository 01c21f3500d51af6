"""The backbone registry: a dict of builders and a decorator that refuses duplicate names."""
from __future__ import annotations

import os
from typing import Callable, Sequence

from torch import nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str):
    """Decorator registering ``builder(*, out_features, out_indices, **overrides) -> nn.Module``."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"register_backbone: name must be a non-empty str, got {name!r}")

    def decorator(builder):
        if name in _BUILDERS:
            raise ValueError(f"register_backbone: a backbone named {name!r} is already registered")
        _BUILDERS[name] = builder
        return builder

    return decorator


def list_backbones() -> list[str]:
    return sorted(_BUILDERS)


def build_backbone(
    name: str,
    *,
    out_features: Sequence[str] | None = None,
    out_indices: Sequence[int] | None = None,
    weights: str | os.PathLike | None = None,
    **overrides,
) -> nn.Module:
    """Build a registered backbone, optionally loading weights.

    ``weights`` is a local file or folder (an existing path wins), a Hugging Face hub id ``org/name[@revision]``
    (downloaded once into the hub cache; see ``backbones.hub``), or ``"imagenet"`` for the published ImageNet-1K
    weights of ``name`` (``backbones.hub.IMAGENET_WEIGHTS``). Any format the backbone understands loads (see
    ``backbones.weights``); loading is strict, and keys of a classifier or task head are reported and dropped.
    """
    if not isinstance(name, str):
        raise TypeError(f"build_backbone: name must be a str, got {type(name).__name__}")
    if name not in _BUILDERS:
        raise ValueError(f"build_backbone: unknown backbone {name!r}; registered: {', '.join(list_backbones())}")
    model = _BUILDERS[name](out_features=out_features, out_indices=out_indices, **overrides)
    if weights is not None:
        from .weights import load_backbone_weights

        load_backbone_weights(model, weights)
    return model
