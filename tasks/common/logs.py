"""The JSON-lines training log and the loss / metric curves drawn from it."""
from __future__ import annotations

import json
import math
from pathlib import Path


class JsonlLog:
    """Appends one JSON object per line and flushes, so the log survives a crash."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=_jsonable) + "\n")

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def _jsonable(value):
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def scalar_metrics(metrics: dict) -> dict[str, float]:
    """The plain-number entries of a metrics dict (per-class lists are left out)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def plot_curves(records: list[dict], path: str | Path) -> None:
    """Training loss (and learning rate) and every scalar validation metric against the iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("mode") == "train"]
    evals = [r for r in records if r.get("mode") == "val"]
    names = sorted({k for r in evals for k in scalar_metrics(r.get("metrics", {}))})
    fig, axes = plt.subplots(1, 1 + len(names), figsize=(4.5 * (1 + len(names)), 3.5), squeeze=False)
    ax = axes[0, 0]
    if train:
        ax.plot([r["iter"] for r in train], [r["loss"] for r in train], label="loss")
        ax.set_yscale("log" if all(r["loss"] > 0 for r in train) else "linear")
        ax2 = ax.twinx()
        ax2.plot([r["iter"] for r in train], [r["lr"] for r in train], color="tab:orange", alpha=0.6, label="lr")
        ax2.set_ylabel("learning rate")
    ax.set_xlabel("iteration")
    ax.set_title("training loss")
    for ax, name in zip(axes[0, 1:], names):
        points = [(r["iter"], r["metrics"][name]) for r in evals if name in r.get("metrics", {})]
        points = [(i, v) for i, v in points if not math.isnan(v)]
        ax.plot([i for i, _ in points], [v for _, v in points], marker="o")
        ax.set_xlabel("iteration")
        ax.set_title(f"val {name}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
