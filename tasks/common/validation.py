"""Config checks that need the model: sizes the backbone cannot take, reported under the config key that
sets them (``data.crop``), not at the first training step."""
from __future__ import annotations

from .config import ConfigError


def check_min_size(key: str, value, model) -> None:
    """ConfigError naming ``key`` if any side in ``value`` (an int or a sequence of ints) is below the smallest
    input ``model.backbone`` accepts (its ``min_input_size``: 32 px for PVTv2)."""
    backbone = getattr(model, "backbone", None)
    minimum = getattr(backbone, "min_input_size", None)
    if minimum is None:
        return
    sides = (value,) if isinstance(value, int) else tuple(value)
    if any(side < minimum for side in sides):
        name = getattr(backbone, "name", type(backbone).__name__)
        raise ConfigError(f"{key}={value!r}: {name} needs inputs of at least {minimum} px per side")
