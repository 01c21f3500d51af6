"""What every task's data pipeline shares: per-sample randomness, composition, seeded dataset indexing.

A sample is a dict; random steps draw only from ``sample["rng"]`` (a ``numpy.random.Generator``), which a
dataset seeds from its key: ``dataset[(index, seed)]`` (what the training sampler yields), so a sample's
augmentation depends only on its seed — the same in a resumed run, whatever the number of workers.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def sample_rng(sample: dict, who: str) -> np.random.Generator:
    rng = sample.get("rng")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"{who} draws from sample['rng'], a numpy.random.Generator, got {type(rng).__name__}; index the "
            "dataset with (index, seed) or set sample['rng'] = np.random.default_rng(seed) yourself"
        )
    return rng


class Compose:
    """Apply ``transforms`` in order."""

    def __init__(self, transforms: Sequence[Callable[[dict], dict]]):
        for i, t in enumerate(transforms):
            if not callable(t):
                raise TypeError(f"Compose: transforms[{i}] is not callable: {t!r}")
        self.transforms = list(transforms)

    def __call__(self, sample: dict) -> dict:
        for t in self.transforms:
            sample = t(sample)
        return sample

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


class SeededDataset:
    """Mixin for map-style datasets with ``read(index) -> sample`` and ``transforms``: indexing with
    ``(index, seed)`` runs the transforms with ``sample["rng"] = np.random.default_rng(seed)``."""

    transforms: Callable[[dict], dict] | None

    def __getitem__(self, key) -> dict:
        if isinstance(key, tuple) and len(key) != 2:
            raise TypeError(f"dataset keys are an index or (index, seed), got {key!r}")
        index, seed = key if isinstance(key, tuple) else (key, None)
        sample = self.read(index)
        if self.transforms is None:
            return sample
        sample["rng"] = np.random.default_rng(seed)
        sample = self.transforms(sample)
        sample.pop("rng", None)
        return sample
