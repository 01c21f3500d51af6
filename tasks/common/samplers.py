"""Resumable data order: an endless, per-process stream of (index, augmentation seed) pairs.

The order depends only on (seed, epoch), and each sample's augmentation seed only on (seed, epoch,
index), so a run resumed at iteration ``it`` sees exactly the data and augmentations an uninterrupted
run would, whatever the number of DataLoader workers.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


class TrainSampler(Sampler):
    """Yields ``(index, (seed, epoch, index))`` forever, starting at position ``start`` of this rank's stream."""

    def __init__(self, size: int, *, seed: int, rank: int = 0, world_size: int = 1, start: int = 0):
        if size < world_size:
            raise ValueError(f"the training set has {size} samples, fewer than the {world_size} processes")
        self.size, self.seed, self.rank, self.world_size, self.start = size, seed, rank, world_size, start
        self.per_rank = size // world_size

    def __iter__(self) -> Iterator[tuple[int, tuple[int, int, int]]]:
        pos = self.start
        while True:
            epoch, offset = divmod(pos, self.per_rank)
            g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, epoch]).generate_state(1, np.uint64)[0] >> 1))
            order = torch.randperm(self.size, generator=g)[self.rank :: self.world_size][: self.per_rank].tolist()
            for index in order[offset:]:
                yield index, (self.seed, epoch, index)
                pos += 1

    def __len__(self) -> int:  # endless; DataLoader only needs this for its own bookkeeping
        return 2**62


class ShardSampler(Sampler):
    """Evaluation: rank r takes indices r, r + W, r + 2W, ... with no padding (so nothing is counted twice)."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, size, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
