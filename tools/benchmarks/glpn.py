"""GLPN (encoder + decoder + depth head): ours vs Hugging Face ``GLPNForDepthEstimation``."""
from __future__ import annotations

import tempfile

import torch

from tasks.depth.model import GLPN

from .common import TOLERANCE, gflops, import_references, params_m, perturb, ratio, run_grid, time_interleaved, verdict

GLPN_SIZES = {  # Hugging Face GLPNConfig arguments of the variants
    "mit_b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2]),
    "mit_b2": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3]),
    "mit_b4": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 8, 27, 3]),  # vinvino02/glpn-nyu
}


def models(name: str, **config) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(ours, hf)`` with identical weights: HF's perturbed random init, saved by HF, loaded
    by ours. ``config``: Hugging Face config arguments over the variant's."""
    _, transformers = import_references()
    with torch.inference_mode(False):  # save_pretrained needs ordinary tensors
        hf = perturb(transformers.GLPNForDepthEstimation(transformers.GLPNConfig(**{**GLPN_SIZES[name], **config})))
        with tempfile.TemporaryDirectory() as folder:
            hf.save_pretrained(folder)
            ours = GLPN.from_pretrained(folder)  # with HF's LayerNorm eps, 1e-5 everywhere
    return ours, hf


def glpn_row(name: str, batch: int, size: tuple[int, int], repeats: int) -> tuple[list, bool]:
    """Ours vs HF GLPNForDepthEstimation with identical weights."""
    ours, hf = models(name)
    x = torch.rand(batch, 3, *size)  # GLPN input: RGB in [0, 1], not normalised
    fns = {"ours": lambda: ours(x), "hf": lambda: hf(pixel_values=x).predicted_depth}
    diff = (fns["ours"]()[:, 0] - fns["hf"]()).abs().max().item()  # metres; HF squeezes the channel
    ms = time_interleaved(fns, repeats)
    row = [
        name, batch, f"{size[0]}×{size[1]}", f"{ms['ours']:.1f}", f"{ms['hf']:.1f}", ratio(ms, "hf"),
        f"{diff:.1e}", verdict(diff), f"{params_m(ours):.2f}", f"{gflops(ours, x[:1]):.1f}",
    ]
    return row, diff <= TOLERANCE


def suite(args) -> bool:
    """GLPN (encoder + decoder + depth head) vs HF GLPNForDepthEstimation; True if depths agree."""
    grid = [("mit_b0", 1, (128, 160))] if args.quick else [("mit_b4", 1, (480, 640)), ("mit_b4", 1, (256, 352))]
    return run_grid(args, grid, glpn_row, "GLPN depth: ours vs Hugging Face GLPNForDepthEstimation",
                    ["model", "batch", "size", "ours ms", "HF ms", "vs HF", "max diff depth (m)",
                     f"≤{TOLERANCE:g}", "params M", "GFLOPs"])
