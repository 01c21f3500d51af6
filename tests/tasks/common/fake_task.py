"""A tiny regression task that drives the engine in tests (and in subprocesses: run as a script)."""
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from tasks.common import checkpoint
from tasks.common.config import Config, OptimizerConfig, ScheduleConfig
from tasks.common.distributed import all_reduce_sum
from tasks.common.task import Task


@dataclass
class FakeModel:
    width: int = 8
    nan_at: int = -1  # the loss becomes NaN from this training step on
    sleep: float = 0.0  # seconds per training step, so a test can interrupt a run
    crash_at: int = -1  # the process "dies" (raises) at this training step
    dropout: float = 0.2


@dataclass
class FakeData:
    size: int = 48
    batch_size: int = 4
    num_workers: int = 0
    bad_file: str = ""  # while this file holds "bad", training sample 5 "is" this file and cannot be read
    bad_val_file: str = ""  # the same for validation sample 3


class Net(nn.Module):
    def __init__(self, width: int, dropout: float = 0.2):
        super().__init__()
        self.config = {"width": width}
        self.body = nn.Sequential(nn.Conv2d(3, width, 3), nn.BatchNorm2d(width), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Linear(width, 1)

    def forward(self, x):
        return self.head(self.body(x).mean((2, 3))).squeeze(1)


class Points(Dataset):
    """x: random images; y: their mean. Training samples get noise from their own augmentation seed."""

    def __init__(self, size: int, train: bool, bad_file: str = ""):
        g = torch.Generator().manual_seed(1 if train else 2)
        self.x = torch.randn(size, 3, 8, 8, generator=g)
        self.train, self.bad_file = train, bad_file

    def __len__(self):
        return len(self.x)

    def __getitem__(self, key):
        index, seed = key if self.train else (key, None)
        if index == (5 if self.train else 3) and self.bad_file and open(self.bad_file).read() == "bad":
            raise ValueError(f"mask file {self.bad_file} holds label 7, outside the classes 0-3")
        x = self.x[index]
        if seed is not None:
            x = x + 0.1 * torch.from_numpy(np.random.default_rng(seed).standard_normal(x.shape).astype("float32"))
        return x, x.mean()


class FakeTask(Task):
    main_metric = "mae"
    higher_is_better = False

    def __init__(self, cfg: Config):
        self.cfg, self.steps = cfg, 0
        self.nan_at, self.sleep, self.crash_at = cfg.model.nan_at, cfg.model.sleep, cfg.model.crash_at

    def build_model(self):
        return Net(self.cfg.model.width, self.cfg.model.dropout)

    def load_model(self, path):
        state = checkpoint.load(path)
        model = Net(**state["meta"]["model"])
        model.load_state_dict(state["model"])
        return model

    def train_dataset(self):
        return Points(self.cfg.data.size, train=True, bad_file=self.cfg.data.bad_file)

    def val_dataset(self):
        return Points(self.cfg.data.size // 2, train=False, bad_file=self.cfg.data.bad_val_file)

    def collate(self, samples):
        return torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples])

    def loss(self, model, batch, device):
        self.steps += 1
        if self.sleep:
            time.sleep(self.sleep)
        if self.steps == self.crash_at:
            raise SystemExit("crashed")
        x, y = (t.to(device) for t in batch)
        loss = ((model(x) - y) ** 2).mean()
        if 0 <= self.nan_at < self.steps:
            loss = loss * float("nan")
        return {"loss_mse": loss}

    def evaluate(self, model, loader, device):
        total = torch.zeros(2, dtype=torch.float64)
        for x, y in loader:
            total += torch.tensor([(model(x.to(device)) - y.to(device)).abs().sum().item(), len(y)], dtype=torch.float64)
        total = all_reduce_sum(total)
        return {"mae": float(total[0] / total[1]), "count": float(total[1])}

    def metrics_table(self, metrics):
        return "\n".join(f"{k}: {v}" for k, v in metrics.items())


def fake_config(max_iters=12, **schedule) -> Config:
    return Config(
        task="fake",
        model=FakeModel(),
        data=FakeData(),
        optimizer=OptimizerConfig(name="adamw", lr=1e-2, weight_decay=0.01, lr_mults={"head": 2.0}),
        schedule=ScheduleConfig(max_iters=max_iters, eval_interval=4, checkpoint_interval=3, log_interval=1, **schedule),
    )


if __name__ == "__main__":  # python fake_task.py WORK_DIR MAX_ITERS [--resume] [KEY=VALUE ...]
    import os

    from tasks.common.config import ConfigError, apply_options
    from tasks.common.distributed import cleanup
    from tasks.common.engine import fit

    work_dir, max_iters, *rest = sys.argv[1:]
    resume = "--resume" in rest
    cfg = apply_options(fake_config(int(max_iters)), [r for r in rest if r != "--resume"])
    if "START_AT" in os.environ:  # start at this wall-clock time, e.g. together with another process
        time.sleep(max(0.0, float(os.environ["START_AT"]) - time.time()))
    try:
        result = fit(FakeTask(cfg), cfg, work_dir, resume=f"{work_dir}/last.pth" if resume else None)
    except ConfigError as e:  # as tools/train.py reports it
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    cleanup()
    sys.exit(130 if result["stopped"] else 0)
