"""Benchmark our models against their reference implementations (CPU, fp32, inference).

    python tools/benchmark.py backbone  [--quick] [--markdown] [--repeats N]
    python tools/benchmark.py segformer [--quick] [--markdown] [--repeats N]
    python tools/benchmark.py glpn      [--quick] [--markdown] [--repeats N]
    python tools/benchmark.py detr      [--quick] [--markdown] [--repeats N]
    python tools/benchmark.py msda      [--quick] [--markdown] [--repeats N]

Each suite builds the reference models with random weights (their own init plus noise), converts those
exact weights into ours, checks on identical input that the outputs agree (max abs difference <= 1e-4)
and times the implementations round-robin, so drift of a shared machine hits all of them alike.
The exit code is 1 if any output differs by more than the tolerance.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from backbones import build_backbone
from backbones.weights import check_state_dict
from heads.deformable_detr.ms_deform_attn import ms_deform_attn, ms_deform_attn_bag
from tasks.depth.model import GLPN
from tasks.detection.model import DeformableDETR
from tasks.segmentation.model import SegFormer

TOLERANCE = 1e-4
PVT_V2 = {  # Hugging Face PvtV2Config arguments of the variants
    "pvt_v2_b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2]),
    "pvt_v2_b2": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3]),
}
HF_EPS = dict(layer_norm_eps=1e-6, embed_layer_norm_eps=1e-6)  # HF PvtV2 uses 1e-6 in every LayerNorm


def import_references():
    """Return the optional reference libraries ``(timm, transformers)``, or exit with how to install them."""
    try:
        import timm
        import transformers
    except ImportError as e:
        sys.exit(f"error: the reference implementations are missing ({e.name}): pip install -e .[reference]")
    return timm, transformers


def environment() -> str:
    """One line: library versions, threads and CPU model."""
    timm, transformers = import_references()
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    models = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
    cpu = models[0] if models else platform.processor() or "unknown"
    return (
        f"torch {torch.__version__} | timm {timm.__version__} | transformers {transformers.__version__} | "
        f"threads {torch.get_num_threads()} | CPU: {cpu} | Python {platform.python_version()}"
    )


def perturb(module: torch.nn.Module, scale: float = 0.05) -> torch.nn.Module:
    """Add ``scale * randn`` to every parameter so that no weight keeps a trivial init (LayerNorm 1/0)."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)
    return module.eval()


def ours_from(name: str, reference: torch.nn.Module, source: str, **overrides) -> torch.nn.Module:
    """Our ``name`` backbone holding the reference module's weights, converted and loaded strictly."""
    model = build_backbone(name, out_indices=(0, 1, 2, 3), **overrides)
    converted = model.convert_state_dict(reference.state_dict())
    check_state_dict(model, converted, source)
    model.load_state_dict(converted.state_dict)
    return model.eval()


def time_round_robin(fns: dict, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median milliseconds of each ``fn()``; the repeats cycle through the functions in turn."""
    times = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def max_diff(ours: dict[str, torch.Tensor], reference) -> float:
    """Largest absolute difference over the 4 stage outputs (shapes must match)."""
    diffs = []
    for a, b in zip(ours.values(), reference, strict=True):
        if a.shape != b.shape:
            raise ValueError(f"shape mismatch: ours {tuple(a.shape)} vs reference {tuple(b.shape)}")
        diffs.append((a - b).abs().max().item())
    return max(diffs)


def gflops(model: torch.nn.Module, x: torch.Tensor) -> float:
    """GFLOPs (2 per multiply-add) of one forward; the math SDPA kernel makes the attention countable."""
    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        model(x)
    return counter.get_total_flops() / 1e9


def table(header: list[str], rows: list[list], markdown: bool) -> str:
    """Rows as a GitHub markdown table or as aligned plain text."""
    cells = [header] + [[str(c) for c in row] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(r) + " |" for r in cells]
        lines.insert(1, "|" + "|".join("---" for _ in header) + "|")
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells)


def backbone_row(name: str, batch: int, size: int, repeats: int) -> tuple[list, bool]:
    """Time and compare ours, HF PvtV2Model and timm for one variant / batch / size."""
    timm, transformers = import_references()
    hf = perturb(transformers.PvtV2Model(transformers.PvtV2Config(**PVT_V2[name])))
    tm = perturb(timm.create_model(name, pretrained=False))
    ours = ours_from(name, tm, f"timm {name}")  # our default eps equal timm's
    ours_hf = ours_from(name, hf, f"HF {name}", **HF_EPS)
    x = torch.randn(batch, 3, size, size)
    fns = {
        "ours": lambda: ours(x),
        "hf": lambda: hf(pixel_values=x, output_hidden_states=True).hidden_states,
        "timm": lambda: tm.forward_intermediates(x, intermediates_only=True),
    }
    diff_hf = max_diff(ours_hf(x), fns["hf"]())
    diff_timm = max_diff(fns["ours"](), fns["timm"]())
    ok = max(diff_hf, diff_timm) <= TOLERANCE
    ms = time_round_robin(fns, repeats)
    params = sum(p.numel() for p in ours.parameters()) / 1e6
    row = [
        name, batch, f"{size}²", f"{ms['ours']:.1f}", f"{ms['hf']:.1f}", f"{ms['timm']:.1f}",
        f"{ms['hf'] / ms['ours']:.2f}×", f"{ms['timm'] / ms['ours']:.2f}×", f"{diff_hf:.1e}", f"{diff_timm:.1e}",
        "OK" if ok else "MISMATCH", f"{params:.2f}", f"{gflops(ours, x[:1]):.2f}",
    ]
    return row, ok


def linear_attention_rows(sizes: list[int], repeats: int) -> list[list]:
    """Ours b2 vs b2_li at batch 1: ms, ratio and ms per megapixel at each size."""
    models = {n: build_backbone(n, out_indices=(0, 1, 2, 3)).eval() for n in ("pvt_v2_b2", "pvt_v2_b2_li")}
    rows = []
    for size in sizes:
        x = torch.randn(1, 3, size, size)
        big = size > 512
        fns = {n: (lambda m=m: m(x)) for n, m in models.items()}
        ms = time_round_robin(fns, min(repeats, 3) if big else repeats, warmup=1 if big else 2)
        mp = size * size / 1e6
        b2, li = ms["pvt_v2_b2"], ms["pvt_v2_b2_li"]
        rows.append(
            [f"{size}²", f"{mp:.2f}", f"{b2:.1f}", f"{li:.1f}", f"{b2 / li:.2f}×", f"{b2 / mp:.1f}", f"{li / mp:.1f}"]
        )
    return rows


def backbone_suite(args) -> bool:
    """PVTv2 backbone vs HF PvtV2Model and timm; then b2 vs b2_li scaling. Returns True if all outputs agree."""
    grid = [("pvt_v2_b0", 1, 224)] if args.quick else [
        (n, b, s) for n in ("pvt_v2_b0", "pvt_v2_b2") for b in (1, 8) for s in (224, 512)
    ]
    repeats = 2 if args.quick else args.repeats
    rows, ok = [], True
    for name, batch, size in grid:
        row, row_ok = backbone_row(name, batch, size, repeats)
        rows.append(row)
        ok &= row_ok
        print(f"  measured {name} batch {batch} {size}²: {'OK' if row_ok else 'MISMATCH'}", file=sys.stderr)
    print(f"\n### PVTv2 backbone: ours vs Hugging Face PvtV2Model vs timm (median of {repeats} runs)\n")
    print(table(
        ["model", "batch", "size", "ours ms", "HF ms", "timm ms", "vs HF", "vs timm",
         "max diff HF", "max diff timm", f"≤{TOLERANCE:g}", "params M", "GFLOPs/img"],
        rows, args.markdown,
    ))
    print("\nGFLOPs count 2 FLOPs per multiply-add (torch FlopCounterMode, batch 1); papers quote GMACs = half.")
    if not args.quick:
        print(f"\n### Linear attention: ours pvt_v2_b2 vs pvt_v2_b2_li, batch 1 "
              f"(median of {args.repeats} runs at 512², {min(args.repeats, 3)} above)\n")
        header = ["size", "MPix", "b2 ms", "b2_li ms", "b2 / b2_li", "b2 ms/MPix", "b2_li ms/MPix"]
        print(table(header, linear_attention_rows([512, 1024, 2048], args.repeats), args.markdown))
    return ok


SEGFORMER = {  # Hugging Face SegformerConfig arguments of the ADE20K models
    "mit_b0": dict(num_labels=150),
    "mit_b2": dict(num_labels=150, hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], decoder_hidden_size=768),
}


def segformer_row(name: str, batch: int, size: int, repeats: int) -> tuple[list, bool]:
    """Ours vs HF SegformerForSemanticSegmentation with identical weights (saved by HF, loaded by ours)."""
    _, transformers = import_references()
    with torch.inference_mode(False):  # save_pretrained needs ordinary tensors
        hf = perturb(transformers.SegformerForSemanticSegmentation(transformers.SegformerConfig(**SEGFORMER[name])))
        with tempfile.TemporaryDirectory() as folder:
            hf.save_pretrained(folder)
            ours = SegFormer.from_pretrained(folder)  # with HF's LayerNorm eps, 1e-5 everywhere
    x = torch.randn(batch, 3, size, size)
    feats_ours = list(ours.backbone(x).values())
    feats_hf = hf.segformer(x, output_hidden_states=True).hidden_states
    fns = {
        "ours": lambda: ours(x),
        "hf": lambda: hf(pixel_values=x).logits,
        "ours head": lambda: ours.head(feats_ours),
        "hf head": lambda: hf.decode_head(feats_hf),
    }
    diff = (fns["ours"]() - fns["hf"]()).abs().max().item()
    ok = diff <= TOLERANCE
    ms = time_round_robin(fns, repeats)
    params = sum(p.numel() for p in ours.parameters()) / 1e6
    row = [
        name, batch, f"{size}²", f"{ms['ours']:.1f}", f"{ms['hf']:.1f}", f"{ms['hf'] / ms['ours']:.2f}×",
        f"{ms['ours head']:.1f}", f"{ms['hf head']:.1f}", f"{diff:.1e}", "OK" if ok else "MISMATCH",
        f"{params:.2f}", f"{gflops(ours, x[:1]):.1f}", f"{gflops(hf, x[:1]):.1f}",
    ]
    return row, ok


def segformer_suite(args) -> bool:
    """SegFormer (encoder + all-MLP head) vs HF SegformerForSemanticSegmentation; True if outputs agree."""
    grid = [("mit_b0", 1, 256)] if args.quick else [("mit_b0", 1, 512), ("mit_b2", 1, 512)]
    repeats = 2 if args.quick else args.repeats
    rows, ok = [], True
    for name, batch, size in grid:
        row, row_ok = segformer_row(name, batch, size, repeats)
        rows.append(row)
        ok &= row_ok
        print(f"  measured {name} batch {batch} {size}²: {'OK' if row_ok else 'MISMATCH'}", file=sys.stderr)
    print(f"\n### SegFormer, 150 classes: ours vs Hugging Face SegformerForSemanticSegmentation (median of {repeats} runs)\n")
    print(table(
        ["model", "batch", "size", "ours ms", "HF ms", "vs HF", "ours head ms", "HF head ms", "max diff logits",
         f"≤{TOLERANCE:g}", "params M", "ours GFLOPs", "HF GFLOPs"],
        rows, args.markdown,
    ))
    return ok


GLPN_SIZES = {  # Hugging Face GLPNConfig arguments of the variants
    "mit_b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2]),
    "mit_b4": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 8, 27, 3]),  # vinvino02/glpn-nyu
}


def glpn_row(name: str, batch: int, size: tuple[int, int], repeats: int) -> tuple[list, bool]:
    """Ours vs HF GLPNForDepthEstimation with identical weights (saved by HF, loaded by ours)."""
    _, transformers = import_references()
    with torch.inference_mode(False):  # save_pretrained needs ordinary tensors
        hf = perturb(transformers.GLPNForDepthEstimation(transformers.GLPNConfig(**GLPN_SIZES[name])))
        with tempfile.TemporaryDirectory() as folder:
            hf.save_pretrained(folder)
            ours = GLPN.from_pretrained(folder)  # with HF's LayerNorm eps, 1e-5 everywhere
    x = torch.rand(batch, 3, *size)  # GLPN input: RGB in [0, 1], not normalised
    fns = {"ours": lambda: ours(x), "hf": lambda: hf(pixel_values=x).predicted_depth}
    diff = (fns["ours"]()[:, 0] - fns["hf"]()).abs().max().item()  # metres; HF squeezes the channel
    ok = diff <= TOLERANCE
    ms = time_round_robin(fns, repeats)
    params = sum(p.numel() for p in ours.parameters()) / 1e6
    row = [
        name, batch, f"{size[0]}×{size[1]}", f"{ms['ours']:.1f}", f"{ms['hf']:.1f}", f"{ms['hf'] / ms['ours']:.2f}×",
        f"{diff:.1e}", "OK" if ok else "MISMATCH", f"{params:.2f}", f"{gflops(ours, x[:1]):.1f}",
    ]
    return row, ok


def glpn_suite(args) -> bool:
    """GLPN (encoder + decoder + depth head) vs HF GLPNForDepthEstimation; True if depths agree."""
    grid = [("mit_b0", 1, (128, 160))] if args.quick else [("mit_b4", 1, (480, 640)), ("mit_b4", 1, (256, 352))]
    return _run_grid(args, grid, glpn_row, "GLPN depth: ours vs Hugging Face GLPNForDepthEstimation",
                     ["model", "batch", "size", "ours ms", "HF ms", "vs HF", "max diff depth (m)",
                      f"≤{TOLERANCE:g}", "params M", "GFLOPs"])


DETR = {  # Hugging Face DeformableDetrConfig arguments of the published variants (COCO: 91 classes)
    "base": dict(num_labels=91),
    "box_refine": dict(num_labels=91, with_box_refine=True),
    "two_stage": dict(num_labels=91, with_box_refine=True, two_stage=True),
}


def detr_row(variant: str, batch: int, size: tuple[int, int], repeats: int) -> tuple[list, bool]:
    """Ours vs HF DeformableDetrForObjectDetection (ResNet-50, 6+6 layers, 300 queries), identical weights."""
    _, transformers = import_references()
    with torch.inference_mode(False):
        config = transformers.DeformableDetrConfig(**DETR[variant])  # a timm ResNet-50, built offline
        hf = perturb(transformers.DeformableDetrForObjectDetection(config))
        with tempfile.TemporaryDirectory() as folder:
            hf.save_pretrained(folder)
            ours = DeformableDETR.from_pretrained(folder)
    x = torch.randn(batch, 3, *size)
    fns = {"ours": lambda: ours(x), "hf": lambda: hf(pixel_values=x)}
    o, r = fns["ours"](), fns["hf"]()
    diff = max((o["pred_logits"] - r.logits).abs().max().item(), (o["pred_boxes"] - r.pred_boxes).abs().max().item())
    ok = diff <= TOLERANCE
    ms = time_round_robin(fns, repeats)
    params = sum(p.numel() for p in ours.parameters()) / 1e6
    row = [variant, batch, f"{size[0]}×{size[1]}", f"{ms['ours']:.0f}", f"{ms['hf']:.0f}",
           f"{ms['hf'] / ms['ours']:.2f}×", f"{diff:.1e}", "OK" if ok else "MISMATCH", f"{params:.1f}"]
    return row, ok


def detr_suite(args) -> bool:
    """Deformable-DETR vs HF DeformableDetrForObjectDetection; True if logits and boxes agree."""
    grid = [("base", 1, (256, 320))] if args.quick else [
        ("base", 1, (800, 1066)), ("base", 1, (512, 683)), ("box_refine", 1, (512, 683)), ("two_stage", 1, (512, 683))
    ]
    return _run_grid(args, grid, detr_row, "Deformable-DETR: ours vs Hugging Face DeformableDetrForObjectDetection",
                     ["variant", "batch", "size", "ours ms", "HF ms", "vs HF", "max diff", f"≤{TOLERANCE:g}", "params M"])


def msda_row(name: str, batch: int, size: tuple[int, int], repeats: int) -> tuple[list, bool]:
    """The sampling core of multi-scale deformable attention for the encoder of a ``size`` image (every
    token queries 4 levels x 4 points x 8 heads): ours (one embedding_bag pass), our grid_sample reference
    and Hugging Face's ``MultiScaleDeformableAttention`` (its CPU path), on identical random inputs."""
    _, transformers = import_references()
    from transformers.models.deformable_detr.modeling_deformable_detr import MultiScaleDeformableAttention

    shapes = [(-(-size[0] // stride), -(-size[1] // stride)) for stride in (8, 16, 32, 64)]  # the 4 levels
    tokens = sum(a * b for a, b in shapes)
    heads, dim, levels, points = 8, 32, 4, 4
    value = torch.randn(batch, tokens, heads, dim)
    locations = torch.rand(batch, tokens, heads, levels, points, 2) * 1.1 - 0.05  # some samples fall outside
    weights = torch.rand(batch, tokens, heads, levels * points).softmax(-1).view(batch, tokens, heads, levels, points)
    shapes_t = torch.tensor(shapes)
    starts = torch.cat([shapes_t.new_zeros(1), (shapes_t[:, 0] * shapes_t[:, 1]).cumsum(0)[:-1]])
    hf = MultiScaleDeformableAttention()
    fns = {
        "ours": lambda: ms_deform_attn_bag(value, shapes, locations, weights),
        "reference": lambda: ms_deform_attn(value, shapes, locations, weights),
        "hf": lambda: hf(value, shapes_t, shapes, starts, locations, weights, 64),
    }
    diff = max((fns["ours"]() - fns[k]()).abs().max().item() for k in ("reference", "hf"))
    ok = diff <= TOLERANCE
    ms = time_round_robin(fns, repeats)
    row = [name, batch, f"{size[0]}×{size[1]}", tokens, f"{ms['ours']:.0f}", f"{ms['reference']:.0f}",
           f"{ms['hf']:.0f}", f"{ms['hf'] / ms['ours']:.2f}×", f"{diff:.1e}", "OK" if ok else "MISMATCH"]
    return row, ok


def msda_suite(args) -> bool:
    """Multi-scale deformable attention (sampling core) vs HF's; True if outputs agree."""
    grid = [("encoder", 1, (256, 320))] if args.quick else [("encoder", 1, (800, 1066)), ("encoder", 1, (512, 683))]
    return _run_grid(args, grid, msda_row, "Multi-scale deformable attention: ours vs Hugging Face",
                     ["attention", "batch", "image", "queries", "ours ms", "our grid_sample ms", "HF ms", "vs HF",
                      "max diff", f"≤{TOLERANCE:g}"])


def _run_grid(args, grid, row_fn, title: str, header: list[str]) -> bool:
    repeats = 2 if args.quick else args.repeats
    rows, ok = [], True
    for name, batch, size in grid:
        row, row_ok = row_fn(name, batch, size, repeats)
        rows.append(row)
        ok &= row_ok
        print(f"  measured {name} batch {batch} {size}: {'OK' if row_ok else 'MISMATCH'}", file=sys.stderr)
    print(f"\n### {title} (median of {repeats} runs)\n")
    print(table(header, rows, args.markdown))
    return ok


SUITES = {
    "backbone": backbone_suite,
    "segformer": segformer_suite,
    "glpn": glpn_suite,
    "detr": detr_suite,
    "msda": msda_suite,
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="suite", required=True)
    for name, fn in SUITES.items():
        p = sub.add_parser(name, help=fn.__doc__.split(";")[0])
        p.add_argument("--quick", action="store_true", help="smoke run: smallest model and input, 2 repeats")
        p.add_argument("--markdown", action="store_true", help="print the tables as GitHub markdown")
        p.add_argument("--repeats", type=int, default=5, help="timed runs per implementation (default 5)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    print(environment())
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.inference_mode():
        ok = SUITES[args.suite](args)
    print(f"\n{'all outputs agree' if ok else 'MISMATCH: outputs differ'} (tolerance {TOLERANCE:g}); "
          f"suite took {time.perf_counter() - start:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
