"""Inference of every task model at the issue's sizes, ours vs Hugging Face, in fp32 or (``--amp bf16``) with
both under the same ``torch.autocast("cpu", bfloat16)``: backbone 8×224², SegFormer-b2 512², GLPN-b2 480×640,
Deformable-DETR (box refinement) 512×672, classifier 16×224².

Both sides hold the same weights (Hugging Face's perturbed init loaded into ours) and see the same input. The
outputs are compared by their relative L2 difference (``||ours - HF|| / ||HF||``, over every output tensor):
at most 1e-4 in fp32; under bf16, where each side rounds on its own, at most 3e-2 (the bf16 tolerance of
tests/tasks/common/test_amp.py)."""
from __future__ import annotations

import sys

import torch

from tasks.common.amp import autocast

from . import backbone, classification, detr, glpn, segformer
from .common import ratio, repeats_of, table, time_interleaved

TOLERANCE = {"none": 1e-4, "bf16": 3e-2}


def _backbone(quick: bool):
    name = "pvt_v2_b0" if quick else "pvt_v2_b2"
    hf, _ = backbone.references(name)
    ours = backbone.ours_from(name, hf, f"HF {name}", **backbone.HF_EPS)
    x = torch.randn(2 if quick else 8, 3, 224, 224)
    return (lambda: list(ours(x).values()),
            lambda: list(hf(pixel_values=x, output_hidden_states=True).hidden_states), x)


def _segformer(quick: bool):
    ours, hf = segformer.models("mit_b0" if quick else "mit_b2")
    x = torch.randn(1, 3, *((128, 128) if quick else (512, 512)))
    return lambda: [ours(x)], lambda: [hf(pixel_values=x).logits], x


def _glpn(quick: bool):
    ours, hf = glpn.models("mit_b0" if quick else "mit_b2")
    x = torch.rand(1, 3, *((128, 160) if quick else (480, 640)))
    return lambda: [ours(x)[:, 0]], lambda: [hf(pixel_values=x).predicted_depth], x


def _detr(quick: bool):
    ours, hf = detr.models("box_refine")
    x = torch.randn(1, 3, *((128, 160) if quick else (512, 672)))

    def run_ours():
        out = ours(x)
        return [out["pred_logits"], out["pred_boxes"]]

    def run_hf():
        out = hf(pixel_values=x)
        return [out.logits, out.pred_boxes]

    return run_ours, run_hf, x


def _classifier(quick: bool):
    m = classification.models("pvt_v2_b0" if quick else "pvt_v2_b2")
    x = torch.randn(2 if quick else 16, 3, 224, 224)
    return lambda: [m["ours (hf)"](x)], lambda: [m["hf"](pixel_values=x).logits], x


ROWS = {
    "PVTv2-b2 backbone": _backbone,
    "SegFormer-b2, 150 classes": _segformer,
    "GLPN-b2": _glpn,
    "Deformable-DETR R50 + box refinement": _detr,
    "PVTv2-b2 classifier, 1000 classes": _classifier,
}


def relative_difference(ours: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    num = sum((a.double() - b.double()).pow(2).sum() for a, b in zip(ours, reference, strict=True))
    den = sum(b.double().pow(2).sum() for b in reference)
    return float((num / den).sqrt())


def suite(args) -> bool:
    """Task-model inference ours vs HF at the issue's sizes, fp32 or --amp bf16; True if outputs agree."""
    repeats, amp = repeats_of(args), args.amp
    rows, ok = [], True
    with torch.inference_mode(), autocast(amp, "cpu"):
        for name, build in ROWS.items():
            if args.only is not None and args.only not in name:
                continue
            with torch.inference_mode(False), autocast("none", "cpu"):
                run_ours, run_hf, x = build(args.quick)
            diff = relative_difference(run_ours(), run_hf())
            row_ok = diff <= TOLERANCE[amp]
            ms = time_interleaved({"ours": run_ours, "hf": run_hf}, repeats)
            size = "×".join(map(str, x.shape[-2:]))
            name = f"{name} (quick: smaller)" if args.quick else name
            rows.append([name, x.shape[0], size, f"{ms['ours']:.1f}", f"{ms['hf']:.1f}", ratio(ms, "hf"),
                         f"{diff:.1e}", "OK" if row_ok else "MISMATCH"])
            ok &= row_ok
            print(f"  measured {' | '.join(map(str, rows[-1]))}", file=sys.stderr)
    precision = "fp32" if amp == "none" else f"{amp} autocast on both sides"
    print(f"\n### Inference, {precision}: ours vs Hugging Face (median of {repeats} runs)\n")
    print(table(["model", "batch", "size", "ours ms", "HF ms", "vs HF", "relative L2 diff",
                 f"≤{TOLERANCE[amp]:g}"], rows, args.markdown))
    return ok
