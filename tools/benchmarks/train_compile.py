"""``train --compile``: one training step of ours eager, ours compiled, Hugging Face eager and Hugging Face compiled,
with compile time apart and peak memory per side, plus ours with activation checkpointing.

Each row builds its case twice from the same seed (same weights, input and targets): one pair stays eager, the
other is compiled in place (``tasks.common.compile.compile_model``, inductor, ``--compile-mode``). The compiled
sides are first checked against their eager twins (loss and the norm of all parameter gradients, relative), which
also compiles them: that first call's time is the compile time. Steps are timed interleaved over the four sides.
"""
from __future__ import annotations

import sys
import time

import torch

from tasks.common.amp import bf16_capability
from tasks.common.compile import compile_model

from .common import TOLERANCE, repeats_of, table, time_interleaved
from .train import CASES, checkpointed_peak_mb, measure, peak_mb

SIDES = ("ours", "ours compiled", "HF", "HF compiled")


def _relative(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


def _compiled_check(compiled, eager, x, amp: str) -> tuple[float, float, float]:
    """``(loss diff, grad-norm diff, seconds of the first call)``: the compiled side against its eager twin."""
    start = time.perf_counter()
    lc, _, nc = measure(compiled, x, amp, input_grad=False)
    seconds = time.perf_counter() - start
    le, _, ne = measure(eager, x, amp, input_grad=False)
    return _relative(lc, le), _relative(nc, ne), seconds


def compile_row(name: str, build, repeats: int, amp: str, mode: str) -> tuple[list, bool]:
    torch.manual_seed(0)
    ours, hf, x = build()
    torch.manual_seed(0)
    ours_c, hf_c, x_c = build()
    if not torch.equal(x, x_c):
        sys.exit(f"error: {name}: the two builds differ (the case is not seeded)")
    compile_model(ours_c.model, mode)
    compile_model(hf_c.model, mode)
    checks = {"ours": _compiled_check(ours_c, ours, x, amp), "HF": _compiled_check(hf_c, hf, x, amp)}
    ok = all(max(loss, norm) <= TOLERANCE for loss, norm, _ in checks.values())
    sides = dict(zip(SIDES, (ours, ours_c, hf, hf_c)))
    for side in sides.values():
        side.amp = amp
    ms = time_interleaved({k: (lambda s=s: s.step(x)) for k, s in sides.items()}, repeats, warmup=1)
    mem = {k: peak_mb(s, x) for k, s in sides.items()}
    mem["ours checkpointed"] = checkpointed_peak_mb(ours, x)
    row = [name, *(f"{ms[k]:.0f}" for k in SIDES),
           f"{ms['HF'] / ms['ours compiled']:.2f}×", f"{ms['HF'] / ms['ours']:.2f}×",
           f"{ms['HF compiled'] / ms['ours compiled']:.2f}×",
           f"{checks['ours'][2]:.0f} / {checks['HF'][2]:.0f}",
           *(f"{mem[k]:.0f}" for k in (*SIDES, "ours checkpointed")),
           f"{mem['ours'] / mem['HF']:.2f}×", f"{mem['ours checkpointed'] / mem['HF']:.2f}×",
           f"{max(checks['ours'][:2]):.1e} / {max(checks['HF'][:2]):.1e}", "OK" if ok else "MISMATCH"]
    return row, ok


def suite(args) -> bool:
    """Training steps eager and compiled, ours vs HF; True if every compiled side agrees with its eager twin.
    Needs autograd: called outside inference_mode (tools/benchmark.py train_suite)."""
    repeats, amp = repeats_of(args), args.amp
    precision = "fp32" if amp == "none" else f"{amp} autocast on every side; CPU: {bf16_capability()}"
    print(f"torch.compile mode {args.compile_mode!r}, {precision}")
    rows, ok = [], True
    for name, (build, quick) in CASES.items():
        if args.only is not None and args.only not in name:
            continue
        label, builder = (f"{name} (quick: smaller)", quick) if args.quick else (name, build)
        row, row_ok = compile_row(label, builder, repeats, amp, args.compile_mode)
        rows.append(row)
        ok &= row_ok
        print(f"  measured {' | '.join(map(str, row))}", file=sys.stderr)  # kept if a long run is cut short
    print(f"\n### Training step (forward + loss + backward + AdamW), {precision}: eager and torch.compile, ours vs "
          f"Hugging Face (median of {repeats} runs)\n")
    header = ["training step", *(f"{k} ms" for k in SIDES), "ours compiled vs HF", "ours vs HF",
              "ours compiled vs HF compiled", "compile s ours / HF", *(f"{k} peak MiB" for k in SIDES),
              "ours checkpointed peak MiB", "memory ours/HF", "checkpointed ours/HF",
              f"compiled vs eager diff ours / HF (≤{TOLERANCE:g})", "agree"]
    print(table(header, rows, args.markdown))
    print("\ncompile s: the first compiled call (forward + backward, compilation included); peak MiB: tensor memory "
          "above the step's start (tools/benchmarks/train.py peak_mb).")
    return ok
