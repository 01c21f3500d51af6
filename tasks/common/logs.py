"""The JSON-lines training log and the loss / metric curves drawn from it.

A train record holds ``loss`` (what was back-propagated: the weighted sum of the terms), every term the task
returned (``loss_<term>``, unweighted, and logged-only statistics such as ``cardinality_error``), ``lr`` and,
with clipping, ``grad_norm``; values are means over the iterations since the previous record.

``TensorBoardLog`` (``runtime.loggers=("tensorboard",)``) writes the same values to ``<work dir>/tensorboard/``:
``train/<key>`` for the loss, every term, ``lr`` (and ``grad_norm``), ``val/<metric>`` for every scalar metric,
and a few validation predictions as images (``val_predictions/<n>``). A run resumed at iteration ``s`` purges the
events at steps ``> s`` that the interrupted run wrote after its checkpoint, so the curves continue without
doubles.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch

from .checkpoint import WriteError, _write_atomic
from .config import ConfigError
from .distributed import all_reduce_sum, is_distributed

# Auxiliary copies of a term (``loss_ce_0`` ... for earlier decoder layers, ``loss_ce_enc``) are logged but
# neither shown in the progress bar nor plotted: the figure would grow with the decoder depth.
_AUXILIARY = re.compile(r"_(\d+|enc)$")
MAX_SHOWN_TERMS = 3


class JsonlLog:
    """Appends one JSON object per line and flushes, so the log survives a crash."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def write(self, record: dict) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps(record, default=_jsonable) + "\n")
        except OSError as e:
            raise WriteError(self.path, e) from e

    def read(self) -> list[dict]:
        """Every complete record; a line cut short (the process was killed while writing it) is skipped."""
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return [r for r in records if isinstance(r, dict)]


class TensorBoardLog:
    """Scalars and images for TensorBoard in ``folder`` (see the module docstring); ``start`` > 0 resumes."""

    @staticmethod
    def check_installed() -> None:
        """A ConfigError saying how to install TensorBoard, when it is missing (before a run writes anything)."""
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError as e:
            raise ConfigError(
                f"runtime.loggers: 'tensorboard' needs the tensorboard package ({e}); pip install \"densepred[tensorboard]\""
            ) from e

    def __init__(self, folder: str | Path, start: int = 0):
        self.check_installed()
        from torch.utils.tensorboard import SummaryWriter

        try:
            # the run redoes the iterations after ``start``: hide what the interrupted run logged for them
            self.writer = SummaryWriter(str(folder), purge_step=start + 1 if start > 0 else None)
        except OSError as e:
            raise WriteError(folder, e) from e

    def train(self, step: int, lr: float, means: dict[str, float]) -> None:
        for key, value in {**means, "lr": lr}.items():
            self.writer.add_scalar(f"train/{key}", value, step)

    def val(self, step: int, metrics: dict, pictures=()) -> None:
        for key, value in scalar_metrics(metrics).items():
            self.writer.add_scalar(f"val/{key}", value, step)
        for name, picture in pictures:
            self.writer.add_image(f"val_predictions/{name}", picture, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class LossMeter:
    """Sums the steps' values on the device, so the loop waits for the device only when it reads them (to log,
    and before anything is evaluated or saved), and remembers the first iteration whose loss was not finite.
    A read is one collective (the mean over processes; every process learns of a non-finite loss) and one copy
    to the host."""

    def __init__(self, device: torch.device):
        self.keys: list[str] | None = None
        self.sum = self.bad_values = None
        self.count = 0
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)

    def add(self, values: dict[str, torch.Tensor], iteration: int) -> None:
        if self.keys is not None and list(values) != self.keys:
            raise ValueError(f"the logged values changed from {self.keys} to {list(values)}")
        self.keys = list(values)
        vec = torch.stack(list(values.values()))
        new = ~torch.isfinite(vec[0]) & (self.first_bad < 0)
        self.first_bad = torch.where(new, iteration, self.first_bad)
        self.bad_values = vec if self.bad_values is None else torch.where(new, vec, self.bad_values)
        self.sum = vec if self.sum is None else self.sum + vec
        self.count += 1

    def read(self) -> tuple[dict[str, float], tuple[int, dict] | None]:
        """``(means since the last reset, None)``, or ``(_, (first bad iteration, this process's values then))``."""
        if self.sum is None:
            return {}, None
        stats = torch.cat([self.sum, (self.first_bad >= 0).to(self.sum.dtype).reshape(1)])
        if is_distributed():
            stats = all_reduce_sum(stats) / torch.distributed.get_world_size()
        host = stats.tolist()
        if host[-1] > 0:
            first = torch.where(self.first_bad >= 0, self.first_bad, torch.iinfo(torch.int64).max)
            if is_distributed():
                torch.distributed.all_reduce(first, op=torch.distributed.ReduceOp.MIN)
            mine = dict(zip(self.keys, self.bad_values.tolist())) if int(self.first_bad) >= 0 else {}
            return {}, (int(first), mine)
        return {k: v / self.count for k, v in zip(self.keys, host)}, None

    def local_bad(self) -> tuple[int, dict] | None:
        """This process's first non-finite loss, without any collective (for the error path)."""
        if self.sum is None or int(self.first_bad) < 0:
            return None
        return int(self.first_bad), dict(zip(self.keys, self.bad_values.tolist()))

    def reset(self) -> None:
        self.sum, self.count = None, 0


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def scalar_metrics(metrics: dict) -> dict[str, float]:
    """The plain-number entries of a metrics dict (per-class lists are left out)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def main_terms(keys) -> list[str]:
    """The loss terms worth showing beside the total: up to three ``loss_<term>`` keys that are not auxiliary
    copies, in the task's order; none when the task has a single term (it equals the total)."""
    terms = [k for k in keys if k.startswith("loss_") and not _AUXILIARY.search(k)]
    return terms[:MAX_SHOWN_TERMS] if len(terms) > 1 else []


def current_run(records: list[dict]) -> list[dict]:
    """The records of the run as it stands: a ``start`` record at iteration ``s`` (a resume) supersedes the
    earlier records after ``s``, which came from iterations the resumed run does again."""
    kept: list[dict] = []
    for r in records:
        if r.get("mode") == "start":
            kept = [k for k in kept if k.get("iter", 0) <= r.get("iter", 0)]
        kept.append(r)
    return kept


def plot_curves(records: list[dict], path: str | Path) -> None:
    """Training loss with its main terms (and the learning rate), and every scalar validation metric, against
    the iteration; written atomically (the old figure stays until the new one is complete)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = current_run(records)
    train = [r for r in records if r.get("mode") == "train"]
    evals = [r for r in records if r.get("mode") == "val"]
    names = sorted({k for r in evals for k in scalar_metrics(r.get("metrics", {}))})
    fig, axes = plt.subplots(1, 1 + len(names), figsize=(4.5 * (1 + len(names)), 3.5), squeeze=False)
    try:
        _plot_losses(axes[0, 0], train)
        for ax, name in zip(axes[0, 1:], names):
            points = [(r["iter"], r["metrics"][name]) for r in evals if name in r.get("metrics", {})]
            points = [(i, v) for i, v in points if not math.isnan(v)]
            ax.plot([i for i, _ in points], [v for _, v in points], marker="o")
            ax.set_xlabel("iteration")
            ax.set_title(f"val {name}")
        fig.tight_layout()
        _write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)


def _plot_losses(ax, train: list[dict]) -> None:
    ax.set_xlabel("iteration")
    ax.set_title("training loss")
    if not train:
        return
    iters = [r["iter"] for r in train]
    keys = ["loss", *main_terms(dict.fromkeys(k for r in train for k in r))]
    values = {k: [r.get(k, math.nan) for r in train] for k in keys}
    for k in keys:
        ax.plot(iters, values[k], label=k, linewidth=1.5 if k == "loss" else 1.0)
    finite = [v for k in keys for v in values[k] if math.isfinite(v)]
    ax.set_yscale("log" if finite and min(finite) > 0 else "linear")
    if len(keys) > 1:
        ax.legend(fontsize="small")
    ax2 = ax.twinx()
    ax2.plot(iters, [r["lr"] for r in train], color="tab:gray", alpha=0.5, linestyle="--")
    ax2.set_ylabel("learning rate")
