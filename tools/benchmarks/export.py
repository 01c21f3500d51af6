"""Deployment speed: ONNX Runtime (CPU) vs our PyTorch eager vs ``torch.compile``, per task model at its
recipe's architecture and evaluation input size (random perturbed weights; speed does not depend on them).

    cd tools && python -m benchmarks.export [--task segmentation ...] [--repeats N]

The ONNX file is written by ``tasks.common.export.export_onnx`` (so it is checked against PyTorch first)
into a temporary folder; ONNX Runtime runs with as many intra-op threads as torch. The difference column is
the largest |ONNX - eager| on the timed input.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from .common import perturb, table, time_interleaved

# task -> (constructor, input (h, w)): the configs' models at their evaluation sizes (COCO: a 480x640 photo
# at short side 800; ADE20K: 512x512; NYU: 480x640; ImageNet: the 224 centre crop).
RECIPES = {
    "classification": ("tasks.classification.model:ImageClassifier", dict(backbone="pvt_v2_b2", num_classes=1000), (224, 224)),
    "segmentation": ("tasks.segmentation.model:SegFormer", dict(backbone="pvt_v2_b2", num_classes=150), (512, 512)),
    "depth": ("tasks.depth.model:GLPN", dict(backbone="pvt_v2_b4"), (480, 640)),
    "detection": ("tasks.detection.model:DeformableDETR", dict(backbone="pvt_v2_b2", num_classes=91), (800, 1067)),
}


def build(task: str) -> tuple[torch.nn.Module, tuple[int, int]]:
    from importlib import import_module

    target, kwargs, size = RECIPES[task]
    module, name = target.split(":")
    torch.manual_seed(0)
    return perturb(getattr(import_module(module), name)(**kwargs)), size


def first(out) -> torch.Tensor:
    return out["pred_logits"] if isinstance(out, dict) else out


def row(task: str, repeats: int) -> list:
    from tasks.common.export import export_onnx, onnx_session

    model, (h, w) = build(task)
    x = torch.randn(1, 3, h, w)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        export_onnx(model, Path(folder) / "m.onnx", height=h, width=w, check_sizes=[(1, h // 2 + 1, w // 2 + 3)])
        export_s = time.perf_counter() - start
        session = onnx_session(Path(folder) / "m.onnx", threads=torch.get_num_threads())
        compiled = torch.compile(model)
        with torch.inference_mode():
            start = time.perf_counter()
            compiled(x)
            compile_s = time.perf_counter() - start
            feed = {"pixel_values": x.numpy()}
            fns = {"eager": lambda: model(x), "compile": lambda: compiled(x), "onnx": lambda: session.run(None, feed)}
            diff = (torch.from_numpy(fns["onnx"]()[0]) - first(fns["eager"]())).abs().max().item()
            ms = time_interleaved(fns, repeats, warmup=1)
    return [task, RECIPES[task][1]["backbone"], f"{h}×{w}", f"{ms['eager']:.0f}", f"{ms['compile']:.0f}",
            f"{ms['onnx']:.0f}", f"{ms['eager'] / ms['onnx']:.2f}×", f"{diff:.1e}", f"{export_s:.0f}", f"{compile_s:.0f}"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    header = ["task", "backbone", "input", "eager ms", "compile ms", "ONNX Runtime ms", "eager / ORT", "max |ORT - eager|",
              "export s", "compile s"]
    rows = []
    for task in args.task:
        rows.append(row(task, args.repeats))
        print(table(header, rows[-1:], markdown=True), flush=True)
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, batch 1, median of {args.repeats}")
    print(table(header, rows, markdown=True))


if __name__ == "__main__":
    main()
