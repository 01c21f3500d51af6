"""The sampling core of multi-scale deformable attention: ours vs our grid_sample reference vs Hugging Face's."""
from __future__ import annotations

import torch

from heads.deformable_detr.ms_deform_attn import ms_deform_attn, ms_deform_attn_bag

from .common import TOLERANCE, import_references, ratio, run_grid, time_interleaved, verdict


def msda_row(name: str, batch: int, size: tuple[int, int], repeats: int) -> tuple[list, bool]:
    """The encoder self-attention of a ``size`` image (every token queries 4 levels x 4 points x 8 heads):
    ours (one embedding_bag pass), our grid_sample reference and Hugging Face's
    ``MultiScaleDeformableAttention`` (its CPU path), on identical random inputs."""
    import_references()
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
    ms = time_interleaved(fns, repeats)
    row = [name, batch, f"{size[0]}×{size[1]}", tokens, f"{ms['ours']:.0f}", f"{ms['reference']:.0f}",
           f"{ms['hf']:.0f}", ratio(ms, "hf"), f"{diff:.1e}", verdict(diff)]
    return row, diff <= TOLERANCE


def suite(args) -> bool:
    """Multi-scale deformable attention (sampling core) vs HF's; True if outputs agree."""
    grid = [("encoder", 1, (256, 320))] if args.quick else [("encoder", 1, (800, 1066)), ("encoder", 1, (512, 683))]
    return run_grid(args, grid, msda_row, "Multi-scale deformable attention: ours vs Hugging Face",
                    ["attention", "batch", "image", "queries", "ours ms", "our grid_sample ms", "HF ms", "vs HF",
                     "max diff", f"≤{TOLERANCE:g}"])
