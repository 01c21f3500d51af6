"""Deployment speed: ONNX Runtime (CPU), fp32 and INT8, vs our PyTorch eager and ``torch.compile``, for every
registered task that declares a benchmark (``TaskSpec.benchmark``: its recipe's model and evaluation input size;
random perturbed weights: speed does not depend on them).

    cd tools && python -m benchmarks.export [--task segmentation ...] [--repeats N] [--no-compile] [--profile]

The fp32 file is written by ``tasks.common.export.export_onnx`` (so it is checked against PyTorch first) into a
temporary folder; the INT8 file by ``tasks.common.quantize.quantize_file`` with the task's own ``Int8Spec``
(what stays float), calibrated on 4 random inputs (ranges do not change the speed of the int8 kernels). ONNX
Runtime runs with as many intra-op threads as torch. ``--profile`` adds, per model, where ONNX Runtime spends
its time (per op type, fp32 and INT8: ONNX Runtime's own profiler over the timed runs).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from .common import perturb, table, time_interleaved


def specs() -> dict:
    import tasks  # noqa: F401  (registers the tasks)
    from tasks.common.registry import task_specs

    return {s.name: s for s in task_specs() if s.benchmark is not None}


def build(spec) -> torch.nn.Module:
    torch.manual_seed(0)
    return perturb(spec.model(**spec.benchmark.model))


def first(out) -> torch.Tensor:
    return next(iter(out.values())) if isinstance(out, dict) else out


def row(spec, repeats: int, compile_: bool, profile: bool) -> tuple[list, dict]:
    from tasks.common.export import export_onnx, onnx_session
    from tasks.common.quantize import quantize_file

    model, (h, w) = build(spec), spec.benchmark.size
    x = torch.randn(1, 3, h, w)
    with tempfile.TemporaryDirectory() as folder:
        fp32, int8 = Path(folder) / "m.onnx", Path(folder) / "m8.onnx"
        start = time.perf_counter()
        export_onnx(model, fp32, height=h, width=w, check_sizes=[(1, h // 2 + 1, w // 2 + 3)])
        export_s = time.perf_counter() - start
        calibration = [np.random.default_rng(i).standard_normal((1, 3, h, w), dtype=np.float32) for i in range(4)]
        start = time.perf_counter()
        quantize_file(fp32, int8, calibration, spec.int8.float_ops, spec.int8.float_modules)
        quantize_s = time.perf_counter() - start
        threads = torch.get_num_threads()
        sessions = {"onnx": onnx_session(fp32, threads), "int8": onnx_session(int8, threads)}
        feed = {"pixel_values": x.numpy()}
        fns = {"eager": lambda: model(x), **{k: (lambda s=s: s.run(None, feed)) for k, s in sessions.items()}}
        compile_s = float("nan")
        with torch.inference_mode():
            if compile_:
                compiled = torch.compile(model)
                start = time.perf_counter()
                compiled(x)
                compile_s = time.perf_counter() - start
                fns["compile"] = lambda: compiled(x)
            diff = (torch.from_numpy(fns["onnx"]()[0]) - first(fns["eager"]())).abs().max().item()
            int8_diff = np.abs(fns["int8"]()[0] - fns["onnx"]()[0]).max()
            ms = time_interleaved(fns, repeats, warmup=1)
        ops = {k: profile_ops(p, threads, feed, repeats) for k, p in (("fp32", fp32), ("int8", int8))} if profile else {}
    arch = spec.benchmark.model.get("backbone", "")
    return [spec.name, arch, f"{h}×{w}", f"{ms['eager']:.0f}", f"{ms['compile']:.0f}" if compile_ else "-",
            f"{ms['onnx']:.0f}", f"{ms['int8']:.0f}", f"{ms['onnx'] / ms['int8']:.2f}×", f"{ms['eager'] / ms['onnx']:.2f}×",
            f"{diff:.1e}", f"{int8_diff:.2g}", f"{export_s:.0f}", f"{quantize_s:.0f}",
            f"{compile_s:.0f}" if compile_ else "-"], ops


def profile_ops(path: Path, threads: int, feed: dict, repeats: int) -> dict[str, float]:
    """Milliseconds per run spent in each op type (ONNX Runtime's profiler; the mean over ``repeats + 1`` runs)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    session.run(None, feed)
    for _ in range(repeats):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, list[float]] = defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]].append(e["dur"] / 1e3)
    totals = {op: sum(v) / (repeats + 1) for op, v in per_op.items()}
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def op_table(name: str, ops: dict[str, dict[str, float]], top: int = 12) -> str:
    names = list(dict.fromkeys([*list(ops["fp32"])[:top], *list(ops["int8"])[:top]]))
    rows = [[op, f"{ops['fp32'].get(op, 0):.1f}", f"{ops['int8'].get(op, 0):.1f}"] for op in names]
    rows.append(["all ops", f"{sum(ops['fp32'].values()):.1f}", f"{sum(ops['int8'].values()):.1f}"])
    return f"\n{name}: ms per run by op type\n" + table(["op type", "fp32 ms", "INT8 ms"], rows, markdown=True)


def main(argv=None) -> None:
    registered = specs()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", nargs="+", default=list(registered), choices=list(registered))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (minutes for the detectors)")
    parser.add_argument("--profile", action="store_true", help="ONNX Runtime time per op type, fp32 and INT8")
    args = parser.parse_args(argv)
    header = ["task", "backbone", "input", "eager ms", "compile ms", "ORT fp32 ms", "ORT INT8 ms", "INT8 speed-up",
              "eager / ORT", "max |ORT - eager|", "max |INT8 - fp32|", "export s", "quantize s", "compile s"]
    rows, profiles = [], []
    for name in args.task:
        r, ops = row(registered[name], args.repeats, not args.no_compile, args.profile)
        rows.append(r)
        print(table(header, rows[-1:], markdown=True), flush=True)
        if ops:
            profiles.append(op_table(name, ops))
            print(profiles[-1], flush=True)
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, batch 1, median of {args.repeats}")
    print(table(header, rows, markdown=True))
    print("".join(profiles))


if __name__ == "__main__":
    main()
