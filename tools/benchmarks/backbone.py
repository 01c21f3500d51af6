"""PVTv2 backbone: ours vs Hugging Face ``PvtV2Model`` vs timm; then b2 vs b2_li scaling."""
from __future__ import annotations

import torch

from backbones import build_backbone
from backbones.weights import check_state_dict

from .common import (
    TOLERANCE, gflops, import_references, max_diff, params_m, perturb, ratio, repeats_of, run_grid, table,
    time_interleaved, verdict,
)

PVT_V2 = {  # Hugging Face PvtV2Config arguments of the variants
    "pvt_v2_b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2]),
    "pvt_v2_b2": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3]),
}
HF_EPS = dict(layer_norm_eps=1e-6, embed_layer_norm_eps=1e-6)  # HF PvtV2 uses 1e-6 in every LayerNorm


def ours_from(name: str, reference: torch.nn.Module, source: str, **overrides) -> torch.nn.Module:
    """Our ``name`` backbone holding the reference module's weights, converted and loaded strictly."""
    model = build_backbone(name, out_indices=(0, 1, 2, 3), **overrides)
    converted = model.convert_state_dict(reference.state_dict())
    check_state_dict(model, converted, source)
    model.load_state_dict(converted.state_dict)
    return model.eval()


def references(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Hugging Face ``PvtV2Model`` and timm ``name``, with perturbed random weights, in eval mode."""
    timm, transformers = import_references()
    hf = perturb(transformers.PvtV2Model(transformers.PvtV2Config(**PVT_V2[name])))
    tm = perturb(timm.create_model(name, pretrained=False))
    return hf, tm


def backbone_row(name: str, batch: int, size: int, repeats: int) -> tuple[list, bool]:
    """Time and compare ours, HF PvtV2Model and timm for one variant / batch / size."""
    hf, tm = references(name)
    ours = ours_from(name, tm, f"timm {name}")  # our default eps equal timm's
    ours_hf = ours_from(name, hf, f"HF {name}", **HF_EPS)
    x = torch.randn(batch, 3, size, size)
    fns = {
        "ours": lambda: ours(x).values(),
        "hf": lambda: hf(pixel_values=x, output_hidden_states=True).hidden_states,
        "timm": lambda: tm.forward_intermediates(x, intermediates_only=True),
    }
    diff_hf = max_diff(ours_hf(x).values(), fns["hf"]())
    diff_timm = max_diff(fns["ours"](), fns["timm"]())
    ms = time_interleaved(fns, repeats)
    row = [
        name, batch, f"{size}²", f"{ms['ours']:.1f}", f"{ms['hf']:.1f}", f"{ms['timm']:.1f}",
        ratio(ms, "hf"), ratio(ms, "timm"), f"{diff_hf:.1e}", f"{diff_timm:.1e}",
        verdict(max(diff_hf, diff_timm)), f"{params_m(ours):.2f}", f"{gflops(ours, x[:1]):.2f}",
    ]
    return row, max(diff_hf, diff_timm) <= TOLERANCE


def linear_attention_rows(sizes: list[int], repeats: int) -> list[list]:
    """Ours b2 vs b2_li at batch 1: ms, ratio and ms per megapixel at each size."""
    models = {n: build_backbone(n, out_indices=(0, 1, 2, 3)).eval() for n in ("pvt_v2_b2", "pvt_v2_b2_li")}
    rows = []
    for size in sizes:
        x = torch.randn(1, 3, size, size)
        big = size > 512
        fns = {n: (lambda m=m: m(x)) for n, m in models.items()}
        ms = time_interleaved(fns, min(repeats, 3) if big else repeats, warmup=1 if big else 2)
        mp = size * size / 1e6
        b2, li = ms["pvt_v2_b2"], ms["pvt_v2_b2_li"]
        rows.append([f"{size}²", f"{mp:.2f}", f"{b2:.1f}", f"{li:.1f}", ratio(ms, "pvt_v2_b2", "pvt_v2_b2_li"),
                     f"{b2 / mp:.1f}", f"{li / mp:.1f}"])
    return rows


def suite(args) -> bool:
    """PVTv2 backbone vs HF PvtV2Model and timm; then b2 vs b2_li scaling. Returns True if all outputs agree."""
    grid = [("pvt_v2_b0", 1, 224)] if args.quick else [
        (n, b, s) for n in ("pvt_v2_b0", "pvt_v2_b2") for b in (1, 8) for s in (224, 512)
    ]
    ok = run_grid(
        args, grid, backbone_row, "PVTv2 backbone: ours vs Hugging Face PvtV2Model vs timm",
        ["model", "batch", "size", "ours ms", "HF ms", "timm ms", "vs HF", "vs timm",
         "max diff HF", "max diff timm", f"≤{TOLERANCE:g}", "params M", "GFLOPs/img"],
    )
    print("\nGFLOPs count 2 FLOPs per multiply-add (torch FlopCounterMode, batch 1); papers quote GMACs = half.")
    if not args.quick:
        print(f"\n### Linear attention: ours pvt_v2_b2 vs pvt_v2_b2_li, batch 1 "
              f"(median of {repeats_of(args)} runs at 512², {min(repeats_of(args), 3)} above)\n")
        header = ["size", "MPix", "b2 ms", "b2_li ms", "b2 / b2_li", "b2 ms/MPix", "b2_li ms/MPix"]
        print(table(header, linear_attention_rows([512, 1024, 2048], args.repeats), args.markdown))
    return ok
