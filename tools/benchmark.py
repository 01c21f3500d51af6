"""Benchmark our models against their reference implementations (CPU, fp32).

    python tools/benchmark.py backbone  [--quick] [--markdown] [--repeats N]
    python tools/benchmark.py segformer [--quick] [--markdown] [--repeats N]
    python tools/benchmark.py glpn      [--quick] [--markdown] [--repeats N]
    python tools/benchmark.py detr      [--quick] [--markdown] [--repeats N]
    python tools/benchmark.py msda      [--quick] [--markdown] [--repeats N]
    python tools/benchmark.py train     [--quick] [--markdown] [--repeats N] [--amp bf16] [--compile [MODE]]
    python tools/benchmark.py inference [--quick] [--markdown] [--repeats N] [--amp bf16]

Each suite (a module in tools/benchmarks/; `train` times training steps) builds the reference models with random weights (their own init
plus noise), converts those exact weights into ours, checks on identical input that the outputs agree (max
abs difference <= 1e-4) and times the implementations interleaved, so drift of a shared machine hits all of
them alike. The exit code is 1 if any output differs by more than the tolerance. ``--amp bf16`` (train and
inference) runs ours and the reference under the same bf16 autocast, compared with a bf16 tolerance.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from benchmarks import backbone, classification, detr, glpn, inference, msda, segformer, train, train_compile
from benchmarks.common import TOLERANCE, environment
from tasks.common.config import COMPILE_MODES

def train_suite(args) -> bool:
    """Training steps ours vs HF (``--compile``: eager and compiled, both sides); True if all agree."""
    with torch.inference_mode(False):  # main() runs every suite under inference_mode; a training step needs autograd
        return (train_compile.suite if args.compile else train.suite)(args)


SUITES = {
    "backbone": backbone.suite,
    "segformer": segformer.suite,
    "glpn": glpn.suite,
    "detr": detr.suite,
    "msda": msda.suite,
    "train": train_suite,
    "classifier": classification.suite,
    "inference": inference.suite,
}
AMP_SUITES = ("train", "inference")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="suite", required=True)
    for name, fn in SUITES.items():
        p = sub.add_parser(name, help=fn.__doc__.split(";")[0])
        p.add_argument("--quick", action="store_true", help="smoke run: smallest model and input, 2 repeats")
        p.add_argument("--markdown", action="store_true", help="print the tables as GitHub markdown")
        p.add_argument("--repeats", type=int, default=5, help="timed runs per implementation (default 5)")
        p.add_argument("--only", default=None, metavar="TEXT", help=f"rows whose name contains TEXT ({', '.join(AMP_SUITES)})")
        p.add_argument("--amp", default="none", choices=("none", "bf16"), help=f"autocast of both sides ({', '.join(AMP_SUITES)})")
        if name == "train":
            p.add_argument("--compile", dest="compile_mode", nargs="?", const="default", default=None, metavar="MODE",
                           choices=COMPILE_MODES, help="also time torch.compile'd steps of both sides (mode: default)")
    args = parser.parse_args(argv)
    args.compile = getattr(args, "compile_mode", None) is not None
    for option in ("amp", "only"):
        if getattr(args, option) not in ("none", None) and args.suite not in AMP_SUITES:
            parser.error(f"--{option} is supported by {', '.join(AMP_SUITES)}, not {args.suite}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    print(environment())
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.inference_mode():
        ok = SUITES[args.suite](args)
    print(f"\n{'all outputs agree' if ok else 'MISMATCH: outputs differ'} (tolerance {TOLERANCE:g} in fp32); "
          f"suite took {time.perf_counter() - start:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
