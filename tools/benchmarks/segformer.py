"""SegFormer (encoder + all-MLP head): ours vs Hugging Face ``SegformerForSemanticSegmentation``."""
from __future__ import annotations

import tempfile

import torch

from tasks.segmentation.model import SegFormer

from .common import TOLERANCE, gflops, import_references, params_m, perturb, ratio, run_grid, time_interleaved, verdict

SEGFORMER = {  # Hugging Face SegformerConfig arguments of the ADE20K models
    "mit_b0": dict(num_labels=150),
    "mit_b2": dict(num_labels=150, hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], decoder_hidden_size=768),
}


def models(name: str, **config) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(ours, hf)`` with identical weights: HF's perturbed random init, saved by HF, loaded
    by ours. ``config``: Hugging Face config arguments over the variant's."""
    _, transformers = import_references()
    with torch.inference_mode(False):  # save_pretrained needs ordinary tensors
        hf_config = transformers.SegformerConfig(**{**SEGFORMER[name], **config})
        hf = perturb(transformers.SegformerForSemanticSegmentation(hf_config))
        with tempfile.TemporaryDirectory() as folder:
            hf.save_pretrained(folder)
            ours = SegFormer.from_pretrained(folder)  # with HF's LayerNorm eps, 1e-5 everywhere
    return ours, hf


def segformer_row(name: str, batch: int, size: int, repeats: int) -> tuple[list, bool]:
    """Ours vs HF SegformerForSemanticSegmentation with identical weights."""
    ours, hf = models(name)
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
    ms = time_interleaved(fns, repeats)
    row = [
        name, batch, f"{size}²", f"{ms['ours']:.1f}", f"{ms['hf']:.1f}", ratio(ms, "hf"),
        f"{ms['ours head']:.1f}", f"{ms['hf head']:.1f}", f"{diff:.1e}", verdict(diff),
        f"{params_m(ours):.2f}", f"{gflops(ours, x[:1]):.1f}", f"{gflops(hf, x[:1]):.1f}",
    ]
    return row, diff <= TOLERANCE


def suite(args) -> bool:
    """SegFormer (encoder + all-MLP head) vs HF SegformerForSemanticSegmentation; True if outputs agree."""
    grid = [("mit_b0", 1, 256)] if args.quick else [("mit_b0", 1, 512), ("mit_b2", 1, 512)]
    return run_grid(
        args, grid, segformer_row,
        "SegFormer, 150 classes: ours vs Hugging Face SegformerForSemanticSegmentation",
        ["model", "batch", "size", "ours ms", "HF ms", "vs HF", "ours head ms", "HF head ms", "max diff logits",
         f"≤{TOLERANCE:g}", "params M", "ours GFLOPs", "HF GFLOPs"],
    )
