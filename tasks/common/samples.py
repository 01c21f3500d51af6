"""A training sample that cannot be read stops the run with one line, not a data-loader traceback.

Inside a DataLoader worker an exception becomes a multi-line "Caught ValueError in DataLoader worker process 0"
traceback at the next ``next()``, and the run dies without a checkpoint. So the training set is wrapped: a
sample whose reading fails with the datasets' documented errors (``ValueError``, ``OSError``: a truncated image,
a mask with labels outside the classes, a missing file; the messages name the file) comes back as a
``BadSample`` holding that message, a batch with one comes back as the ``BadSample`` itself, and the engine,
which looks at the batches before each step, saves the last completed iteration and raises ``DataError``.
Other exceptions (bugs) keep their traceback.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch.utils.data import Dataset


class DataError(RuntimeError):
    """A training sample could not be read; the message names the file and the problem."""


@dataclass(frozen=True)
class BadSample:
    key: Any
    message: str


class GuardedDataset(Dataset):
    """``dataset[key]``, or a ``BadSample`` when reading it raises ValueError / OSError."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        try:
            return self.dataset[key]
        except (ValueError, OSError) as e:
            return BadSample(key, " ".join(str(e).split()) or type(e).__name__)


class GuardedCollate:
    """``collate(samples)``, or the first ``BadSample`` among them (a picklable callable, for workers)."""

    def __init__(self, collate: Callable):
        self.collate = collate

    def __call__(self, samples: list):
        bad = next((s for s in samples if isinstance(s, BadSample)), None)
        return bad if bad is not None else self.collate(samples)
