"""The published task weights: a short name per checkpoint, its Hugging Face hub id and the published numbers.

``resolve(path_or_name, task)`` is the one name resolver, what every ``from_pretrained`` calls first: an existing
local path wins, a short name (``models()``: every task's ``TaskSpec.published``) becomes its hub id, anything else with a ``/`` is taken as a hub id; the hub id is
then fetched or read from the cache by ``backbones.hub.resolve``.

The numbers are those published with the weights (the papers and the authors' READMEs); these Hugging Face
checkpoints are conversions of the authors' releases, so the authors' numbers are theirs. Ratios are
fractions like our evaluators'; ``None`` means not published (or not verified here).
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from backbones import hub


@dataclass(frozen=True)
class PublishedModel:
    """One published checkpoint (a task declares them in its ``TaskSpec.published``): ``metrics`` use our
    evaluators' keys, ``source`` says where they come from."""

    hub_id: str
    dataset: str
    metrics: dict[str, float] = field(default_factory=dict)
    source: str = ""
    task: str = ""  # filled in from the TaskSpec that publishes it


def models() -> dict[str, PublishedModel]:
    """Every registered task's published checkpoints (``TaskSpec.published``), each with its task filled in."""
    from .registry import task_specs

    return {name: replace(m, task=spec.name) for spec in task_specs() for name, m in spec.published.items()}


def __getattr__(name: str):
    if name == "MODELS":  # the table as it is now (tasks register their entries when imported)
        return models()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve_name(name: str) -> str:
    """The hub id of short name ``name``; an unknown name is a ValueError listing the close ones."""
    table = models()
    if name in table:
        return table[name].hub_id
    close = difflib.get_close_matches(name, table, n=5, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(table)}"
    raise ValueError(
        f"unknown pretrained model {name!r}: not a local path, a hub id (org/name) or a short name; {hint}"
    )


def resolve(path_or_name: str | os.PathLike, task: str | None = None) -> Path:
    """A local path, short name or hub id -> the local file or folder to read (downloading a hub id once).

    With ``task``, a short name of another task is a ValueError saying which model class loads it.
    """
    if not isinstance(path_or_name, (str, os.PathLike)):
        raise TypeError(
            f"pretrained must be a path, hub id or short name (str or os.PathLike), got {type(path_or_name).__name__}"
        )
    on_disk = Path(path_or_name).expanduser().exists()
    if isinstance(path_or_name, str) and not on_disk and _looks_like_name(path_or_name):
        entry = models().get(path_or_name)
        hub_id = resolve_name(path_or_name)
        if task is not None and entry.task != task:
            raise ValueError(f"{path_or_name!r} ({hub_id}) is a {entry.task} model, not a {task} model")
        return hub.resolve(hub_id)
    return hub.resolve(path_or_name)


def _looks_like_name(text: str) -> bool:
    """A bare word (no folder separator, no file suffix) that is not on disk can only mean a short name."""
    return "/" not in text and os.sep not in text and not Path(text).suffix[1:].isalpha()


def table(task: str | None = None) -> list[tuple[str, PublishedModel]]:
    """``(short name, entry)`` rows, in the order of ``MODELS``, optionally of one task."""
    return [(name, m) for name, m in models().items() if task is None or m.task == task]
