"""Deformable-DETR (ResNet-50, 6+6 layers, 300 queries): ours vs Hugging Face ``DeformableDetrForObjectDetection``."""
from __future__ import annotations

import tempfile

import torch

from tasks.detection.model import DeformableDETR

from .common import TOLERANCE, import_references, params_m, perturb, ratio, run_grid, time_interleaved, verdict

DETR = {  # Hugging Face DeformableDetrConfig arguments of the published variants (COCO: 91 classes)
    "base": dict(num_labels=91),
    "box_refine": dict(num_labels=91, with_box_refine=True),
    "two_stage": dict(num_labels=91, with_box_refine=True, two_stage=True),
}


def perturb_frozen_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Frozen BN keeps its affine as buffers, which ``perturb`` leaves alone; timm zero-initialises each
    block's last BN scale, which would switch every residual branch off and make the queries near-copies of
    each other (near-ties for the matcher). Perturbed as the parity tests do."""
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith(("bn1.weight", "bn2.weight", "bn3.weight", "downsample.1.weight")):
                b.uniform_(0.2, 0.6)
            elif name.endswith(("bn1.bias", "bn2.bias", "bn3.bias", "downsample.1.bias")):
                b.normal_(0, 0.1)
    return model


def models(variant: str, **config) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(ours, hf)`` with identical weights: HF's perturbed random init, saved by HF, loaded
    by ours. ``config``: Hugging Face config arguments over the variant's."""
    _, transformers = import_references()
    with torch.inference_mode(False):
        hf_config = transformers.DeformableDetrConfig(**{**DETR[variant], **config})  # a timm ResNet-50, offline
        hf = perturb_frozen_bn(perturb(transformers.DeformableDetrForObjectDetection(hf_config)))
        with tempfile.TemporaryDirectory() as folder:
            hf.save_pretrained(folder)
            ours = DeformableDETR.from_pretrained(folder)
    return ours, hf


def detr_row(variant: str, batch: int, size: tuple[int, int], repeats: int) -> tuple[list, bool]:
    """Ours vs HF DeformableDetrForObjectDetection with identical weights."""
    ours, hf = models(variant)
    x = torch.randn(batch, 3, *size)
    fns = {"ours": lambda: ours(x), "hf": lambda: hf(pixel_values=x)}
    o, r = fns["ours"](), fns["hf"]()
    diff = max((o["pred_logits"] - r.logits).abs().max().item(), (o["pred_boxes"] - r.pred_boxes).abs().max().item())
    ms = time_interleaved(fns, repeats)
    row = [variant, batch, f"{size[0]}×{size[1]}", f"{ms['ours']:.0f}", f"{ms['hf']:.0f}",
           ratio(ms, "hf"), f"{diff:.1e}", verdict(diff), f"{params_m(ours):.1f}"]
    return row, diff <= TOLERANCE


def suite(args) -> bool:
    """Deformable-DETR vs HF DeformableDetrForObjectDetection; True if logits and boxes agree."""
    grid = [("base", 1, (256, 320))] if args.quick else [
        ("base", 1, (800, 1066)), ("base", 1, (512, 683)), ("box_refine", 1, (512, 683)), ("two_stage", 1, (512, 683))
    ]
    return run_grid(args, grid, detr_row, "Deformable-DETR: ours vs Hugging Face DeformableDetrForObjectDetection",
                    ["variant", "batch", "size", "ours ms", "HF ms", "vs HF", "max diff", f"≤{TOLERANCE:g}", "params M"])
