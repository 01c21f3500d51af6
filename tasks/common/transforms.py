"""What every task's data pipeline shares: per-sample randomness, composition, seeded dataset indexing, and
the steps whose role is the same in every task (``RandomHorizontalFlip``).

A sample is a dict; random steps draw only from ``sample["rng"]`` (a ``numpy.random.Generator``), which a
dataset seeds from its key: ``dataset[(index, seed)]`` (what the training sampler yields), so a sample's
augmentation depends only on its seed — the same in a resumed run, whatever the number of workers.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping, Sequence

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


def _flip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    x0, y0, x1, y1 = np.asarray(boxes).reshape(-1, 4).T
    return np.stack([width - x1, y0, width - x0, y1], axis=1)


# How a sample entry is mirrored with its image (a pipeline names its keys' rules in RandomHorizontalFlip.keys):
FLIP_RULES: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "hw": lambda a, width: np.ascontiguousarray(a[:, ::-1]),  # [H, W, ...], like the image
    "nhw": lambda a, width: np.ascontiguousarray(a[..., ::-1]),  # [..., H, W], e.g. per-instance masks
    "xyxy": _flip_boxes,  # [N, 4] boxes in pixels (x0, y0, x1, y1): x0, x1 -> W - x1, W - x0
}


@dataclass(frozen=True)
class RandomHorizontalFlip:
    """Mirror a sample with probability ``prob`` (one draw from ``sample["rng"]`` per call): the image, and each
    entry of ``keys`` present in the sample by its rule (``FLIP_RULES``), e.g. ``keys={"mask": "hw"}`` for a
    dense target, ``{"boxes": "xyxy"}`` for boxes in pixels (so it runs before boxes are normalised). The
    pipeline that holds the step names what it mirrors; entries not named are left as they are."""

    prob: float = 0.5
    keys: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.prob, bool) or not isinstance(self.prob, numbers.Real) or not 0 <= self.prob <= 1:
            raise ValueError(f"RandomHorizontalFlip.prob must be a probability in [0, 1], got {self.prob!r}")
        if not isinstance(self.keys, Mapping):
            raise TypeError(f"RandomHorizontalFlip.keys must be a dict of sample key -> flip rule, got {self.keys!r}")
        bad = {k: r for k, r in self.keys.items() if not isinstance(k, str) or k == "image" or r not in FLIP_RULES}
        if bad:
            raise ValueError(f"RandomHorizontalFlip.keys: {bad} is not a sample key (other than 'image') with a rule "
                             f"of {', '.join(FLIP_RULES)}")
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))

    def __call__(self, sample: dict) -> dict:
        if sample_rng(sample, "RandomHorizontalFlip").random() < self.prob:
            width = sample["image"].shape[1]
            sample["image"] = FLIP_RULES["hw"](sample["image"], width)
            for key, rule in self.keys.items():
                if sample.get(key) is not None:
                    sample[key] = FLIP_RULES[rule](sample[key], width)
        return sample

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(prob={self.prob}, keys={dict(self.keys)})"


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
