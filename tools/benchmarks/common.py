"""What every suite shares: the reference imports, the perturbation, the one timing loop, tables."""
from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from tasks.common.amp import bf16_capability

TOLERANCE = 1e-4


def import_references():
    """Return the optional reference libraries ``(timm, transformers)``, or exit with how to install them."""
    try:
        import timm
        import transformers
    except ImportError as e:
        sys.exit(f"error: the reference implementations are missing ({e.name}): pip install -e .[reference]")
    return timm, transformers


def environment() -> str:
    """One line: library versions, threads, CPU model and its bf16 capability (every bf16 figure is read with it)."""
    timm, transformers = import_references()
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    models = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
    cpu = models[0] if models else platform.processor() or "unknown"
    versions = {"torch": torch.__version__, "timm": timm.__version__, "transformers": transformers.__version__}
    return (
        " | ".join(f"{name} {v}" for name, v in versions.items()) + f" ({pinned_or_not(versions)}) | "
        f"threads {torch.get_num_threads()} | CPU: {cpu}, {bf16_capability()} | Python {platform.python_version()}"
    )


def pinned_or_not(versions: dict[str, str]) -> str:
    """Whether ``versions`` are those constraints.txt pins (the versions the parity tests are verified with)."""
    path = Path(__file__).resolve().parents[2] / "constraints.txt"
    if not path.exists():
        return "constraints.txt not found"
    pins = dict(line.split("==", 1) for line in path.read_text().split() if "==" in line)
    differ = [f"{name} {v} (pinned {pins[name]})" for name, v in versions.items()
              if name in pins and v.split("+")[0] != pins[name]]
    return "not the pinned versions: " + ", ".join(differ) if differ else "as pinned in constraints.txt"


def perturb(module: torch.nn.Module, scale: float = 0.05) -> torch.nn.Module:
    """Add noise to every parameter (and BN statistic) so that no weight keeps a trivial init (LN = 1/0).

    The same perturbation as the tests' (``tests/utils.py``): BatchNorm running statistics move away from
    the identity too, so a folded or frozen BatchNorm is exercised."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)
        for name, b in module.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                b.normal_(0, 0.1)
    return module.eval()


def time_interleaved(fns: dict[str, Callable], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median milliseconds of each ``fn()``. Each repetition runs every function once, in turn, so drift of
    a shared machine hits all implementations alike; ``warmup`` rounds are run first and not counted."""
    times = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def ratio(ms: dict[str, float], reference: str, ours: str = "ours") -> str:
    """How many times faster ``ours`` is than ``reference``, as printed in the tables."""
    return f"{ms[reference] / ms[ours]:.2f}×"


def max_diff(ours, reference) -> float:
    """Largest absolute difference over paired tensors (shapes must match)."""
    diffs = []
    for a, b in zip(ours, reference, strict=True):
        if a.shape != b.shape:
            raise ValueError(f"shape mismatch: ours {tuple(a.shape)} vs reference {tuple(b.shape)}")
        diffs.append((a - b).abs().max().item())
    return max(diffs)


def verdict(diff: float) -> str:
    return "OK" if diff <= TOLERANCE else "MISMATCH"


def gflops(model: torch.nn.Module, x: torch.Tensor) -> float:
    """GFLOPs (2 per multiply-add) of one forward; the math SDPA kernel makes the attention countable."""
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        model(x)
    return counter.get_total_flops() / 1e9


def params_m(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def table(header: list[str], rows: list[list], markdown: bool) -> str:
    """Rows as a GitHub markdown table or as aligned plain text."""
    cells = [header] + [[str(c) for c in row] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(r) + " |" for r in cells]
        lines.insert(1, "|" + "|".join("---" for _ in header) + "|")
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells)


def repeats_of(args) -> int:
    return 2 if args.quick else args.repeats


def run_grid(args, grid, row_fn, title: str, header: list[str]) -> bool:
    """Measure ``row_fn(name, batch, size, repeats)`` for every grid entry and print one table.
    Returns True if every row's outputs agree."""
    repeats = repeats_of(args)
    rows, ok = [], True
    for name, batch, size in grid:
        row, row_ok = row_fn(name, batch, size, repeats)
        rows.append(row)
        ok &= row_ok
        print(f"  measured {name} batch {batch} {size}: {'OK' if row_ok else 'MISMATCH'}", file=sys.stderr)
    print(f"\n### {title} (median of {repeats} runs)\n")
    print(table(header, rows, args.markdown))
    return ok
