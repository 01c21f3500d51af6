"""Image classification: ours vs Hugging Face ``PvtV2ForImageClassification`` and timm ``pvt_v2_*``."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from tasks.classification.model import ImageClassifier

from .common import TOLERANCE, gflops, import_references, params_m, perturb, ratio, run_grid, time_interleaved, verdict

HF_ARCH = {  # Hugging Face PvtV2Config arguments of the published classifiers
    "pvt_v2_b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2]),
    "pvt_v2_b2": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3]),
}


def models(name: str) -> dict[str, torch.nn.Module]:
    """``{"hf", "ours (hf)", "timm", "ours (timm)"}``: each reference with its perturbed random init, saved in
    its own format and loaded into ours (Hugging Face's PvtV2 and timm differ in one LayerNorm eps, so each
    reference has its own copy of ours with exactly its weights)."""
    timm, transformers = import_references()
    with torch.inference_mode(False), tempfile.TemporaryDirectory() as folder:  # saving needs ordinary tensors
        hf = perturb(transformers.PvtV2ForImageClassification(transformers.PvtV2Config(**HF_ARCH[name], num_labels=1000)))
        hf.save_pretrained(folder)
        ours_hf = ImageClassifier.from_pretrained(folder)
        ref = perturb(timm.create_model(name, pretrained=False, num_classes=1000))
        torch.save(ref.state_dict(), Path(folder) / "timm.pth")
        ours_timm = ImageClassifier.from_pretrained(Path(folder) / "timm.pth")
    return {"hf": hf, "ours (hf)": ours_hf, "timm": ref, "ours (timm)": ours_timm}


def classifier_row(name: str, batch: int, size: int, repeats: int) -> tuple[list, bool]:
    """Ours vs HF and timm on identical input, each pair with identical weights."""
    m = models(name)
    x = torch.randn(batch, 3, size, size)
    fns = {
        "ours": lambda: m["ours (timm)"](x),
        "hf": lambda: m["hf"](pixel_values=x).logits,
        "timm": lambda: m["timm"](x),
    }
    diff_hf = (m["ours (hf)"](x) - fns["hf"]()).abs().max().item()
    diff_timm = (fns["ours"]() - fns["timm"]()).abs().max().item()
    diff = max(diff_hf, diff_timm)
    ms = time_interleaved(fns, repeats)
    row = [
        name, batch, f"{size}²", f"{ms['ours']:.1f}", f"{ms['hf']:.1f}", ratio(ms, "hf"), f"{ms['timm']:.1f}",
        ratio(ms, "timm"), f"{diff_hf:.1e}", f"{diff_timm:.1e}", verdict(diff), f"{params_m(m['ours (timm)']):.2f}",
        f"{gflops(m['ours (timm)'], x[:1]):.2f}",
    ]
    return row, diff <= TOLERANCE


def suite(args) -> bool:
    """PVTv2 classifiers vs HF PvtV2ForImageClassification and timm; True if outputs agree."""
    grid = [("pvt_v2_b0", 1, 224)] if args.quick else [("pvt_v2_b2", 1, 224), ("pvt_v2_b2", 16, 224)]
    return run_grid(
        args, grid, classifier_row,
        "PVTv2 image classifier, 1000 classes: ours vs Hugging Face PvtV2ForImageClassification and timm",
        ["model", "batch", "size", "ours ms", "HF ms", "vs HF", "timm ms", "vs timm", "max diff vs HF",
         "max diff vs timm", f"≤{TOLERANCE:g}", "params M", "GFLOPs"],
    )
