"""A sample that cannot be read stops the run with one line, not a data-loader traceback.

Inside a DataLoader worker an exception becomes a multi-line "Caught ValueError in DataLoader worker process 0"
traceback at the next ``next()``, and the run dies without a checkpoint. So every dataset the engine and the
tools read goes through one guard, ``read_guarded``: a sample whose reading fails with the datasets' documented
errors (``ValueError``, ``OSError``: a truncated image, a mask with labels outside the classes, a depth map
without a valid pixel, a missing file; the messages name the file) comes back as a ``BadSample`` holding that
message on one line. Other exceptions (bugs) keep their traceback.

- training: ``GuardedDataset`` + ``GuardedCollate`` (a batch with a bad sample comes back as the ``BadSample``
  itself); the engine looks at the batches before each step, saves the last completed iteration and raises
  ``DataError``.
- evaluation (training's and ``tools/test.py``'s): ``GuardedLoader`` raises ``DataError`` in the main process
  at the first bad batch; the engine saves the state first, as for training.
- ``tools/check_data.py``: ``read_guarded(dataset.read, index)``, a row of its table per bad sample.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch.utils.data import DataLoader, Dataset


class DataError(RuntimeError):
    """A sample could not be read; the message names the file and the problem."""


@dataclass(frozen=True)
class BadSample:
    key: Any
    message: str


def read_guarded(read: Callable[[Any], Any], key):
    """``read(key)``, or a ``BadSample`` (the error's message on one line) when it raises ValueError / OSError."""
    try:
        return read(key)
    except (ValueError, OSError) as e:
        return BadSample(key, " ".join(str(e).split()) or type(e).__name__)


class GuardedDataset(Dataset):
    """``dataset[key]``, or a ``BadSample`` when reading it raises ValueError / OSError."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        return read_guarded(self.dataset.__getitem__, key)


class GuardedCollate:
    """``collate(samples)``, or the first ``BadSample`` among them (a picklable callable, for workers)."""

    def __init__(self, collate: Callable):
        self.collate = collate

    def __call__(self, samples: list):
        bad = next((s for s in samples if isinstance(s, BadSample)), None)
        return bad if bad is not None else self.collate(samples)


class GuardedLoader(DataLoader):
    """A DataLoader over ``GuardedDataset(dataset)`` with ``GuardedCollate(collate_fn)`` whose iteration raises
    ``DataError`` ("a <role> sample cannot be read: <file>: <problem>") at the first batch holding a bad sample.
    ``raw_dataset`` is the dataset itself."""

    def __init__(self, dataset: Dataset, *, collate_fn: Callable, role: str = "validation", **kwargs):
        super().__init__(GuardedDataset(dataset), collate_fn=GuardedCollate(collate_fn), **kwargs)
        self.raw_dataset, self.role = dataset, role

    def __iter__(self):
        for batch in super().__iter__():
            if isinstance(batch, BadSample):
                raise DataError(f"a {self.role} sample cannot be read: {batch.message}")
            yield batch
