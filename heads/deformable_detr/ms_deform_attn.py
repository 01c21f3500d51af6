"""Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021), in plain PyTorch.

Each query looks at ``n_points`` learned locations around its reference point on each of ``n_levels``
feature maps, per head, and takes a softmax-weighted sum of the bilinearly sampled values. The sampling is
``F.grid_sample(bilinear, zeros, align_corners=False)`` on ``2 * loc - 1``: the same numbers as the original
CUDA kernel, which treats a location as pixel ``loc * size - 0.5`` with zero outside the map.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _shapes(spatial_shapes) -> list[tuple[int, int]]:
    """(h, w) per level. ``torch.SymInt`` sizes (``torch.export``, ``torch.compile(dynamic=True)``) pass
    through unchanged: ``int()`` would bake the example's size into the graph."""
    if isinstance(spatial_shapes, torch.Tensor):
        spatial_shapes = spatial_shapes.tolist()
    return [(h if isinstance(h, torch.SymInt) else int(h), w if isinstance(w, torch.SymInt) else int(w))
            for h, w in spatial_shapes]


def _checked_shapes(spatial_shapes, value: torch.Tensor, sampling_locations: torch.Tensor) -> list[tuple[int, int]]:
    """``_shapes``, checked against the S tokens of ``value`` and the L levels of ``sampling_locations``."""
    shapes = _shapes(spatial_shapes)
    S, L = value.shape[1], sampling_locations.shape[3]
    if sum(h * w for h, w in shapes) != S or L != len(shapes):
        raise ValueError(f"ms_deform_attn: spatial_shapes {shapes} do not fit value [B, S={S}, ...] and {L} levels")
    return shapes


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half inputs (the sum over L * P points loses too much in fp16), else ``dtype``."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def ms_deform_attn(
    value: torch.Tensor,
    spatial_shapes,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """The sampling core: ``-> Tensor[B, Q, heads * d]``.

    Args:
        value: ``[B, S, heads, d]``, the levels' ``H_l * W_l`` row-major tokens concatenated (S = sum).
        spatial_shapes: ``[L, 2]`` (h, w) per level, a tensor or a sequence of pairs.
        sampling_locations: ``[B, Q, heads, L, P, 2]`` (x, y) in [0, 1] over each level's map; outside
            samples read zeros.
        attention_weights: ``[B, Q, heads, L, P]``, normalised over L * P by the caller.

    Runs in float32 under autocast or for half inputs (the sum over L * P points loses too much in fp16,
    and the original kernel has no half path); the result has ``value``'s dtype.
    """
    shapes = _checked_shapes(spatial_shapes, value, sampling_locations)
    B, S, heads, d = value.shape
    _, Q, _, L, P, _ = sampling_locations.shape
    out_dtype, compute = value.dtype, _compute_dtype(value.dtype)
    with torch.autocast(value.device.type, enabled=False):
        value = value.to(compute)
        grids = (2 * sampling_locations.to(compute) - 1).transpose(1, 2).flatten(0, 1)  # [B*heads, Q, L, P, 2]
        sampled = []
        for level, (v, (h, w)) in enumerate(zip(value.split([h * w for h, w in shapes], dim=1), shapes)):
            v = v.permute(0, 2, 3, 1).reshape(B * heads, d, h, w)
            sampled.append(
                F.grid_sample(v, grids[:, :, level], mode="bilinear", padding_mode="zeros", align_corners=False)
            )  # [B*heads, d, Q, P]
        weights = attention_weights.to(compute).transpose(1, 2).reshape(B * heads, 1, Q, L * P)
        out = (torch.cat(sampled, dim=-1) * weights).sum(-1)  # [B*heads, d, Q]
        out = out.view(B, heads * d, Q).transpose(1, 2)
    return out.to(out_dtype).contiguous()


class MSDeformAttn(nn.Module):
    """``forward(query[B, Q, C], reference_points[B, Q, L, 2 | 4], value[B, S, C], spatial_shapes[L, 2],
    padding_mask[B, S] | None) -> Tensor[B, Q, C]``.

    ``reference_points`` are normalised to each level's (padded) map: (x, y) points, or (cx, cy, w, h)
    boxes whose size scales the offsets. ``padding_mask`` is True on padded value tokens, which then
    contribute zero. Key names (``sampling_offsets``, ``attention_weights``, ``value_proj``,
    ``output_proj``) are the original's and Hugging Face's. ``sampler``: ``"grid_sample"``
    (``ms_deform_attn``, the reference), ``"embedding_bag"`` (``ms_deform_attn_bag``, the same numbers up to
    float rounding, faster on CPU and with less memory), ``"gather"`` (``ms_deform_attn_gather``: gathers and
    arithmetic only, for export; ``set_sampler(model, "gather")``) or ``"auto"`` (embedding_bag on CPU).
    """

    def __init__(
        self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4, sampler: str = "auto"
    ):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"MSDeformAttn: d_model={d_model} must be divisible by n_heads={n_heads}")
        if sampler != "auto" and sampler not in _SAMPLERS:
            raise ValueError(f"MSDeformAttn: sampler must be 'auto' or one of {sorted(_SAMPLERS)}, got {sampler!r}")
        self.sampler = sampler
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference init: offsets start on rays (one direction per head, point p at distance p + 1),
        attention uniform over levels and points."""
        nn.init.zeros_(self.sampling_offsets.weight)
        theta = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([theta.cos(), theta.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True).values  # onto the unit square
        grid = grid[:, None, None, :].repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32)[None, None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for linear in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value: torch.Tensor,
        spatial_shapes,
        padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, Q, _ = query.shape
        S = value.shape[1]
        heads, L, P = self.n_heads, self.n_levels, self.n_points
        value = self.value_proj(value)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(B, S, heads, self.d_model // heads)
        offsets = self.sampling_offsets(query).view(B, Q, heads, L, P, 2)
        weights = self.attention_weights(query).view(B, Q, heads, L * P).softmax(-1).view(B, Q, heads, L, P)
        if reference_points.shape[-1] == 2:
            # offset / (w, h) per level, divided by the (possibly symbolic) sizes: no tensor of Python ints
            scaled = [torch.stack((offsets[:, :, :, level, :, 0] / w, offsets[:, :, :, level, :, 1] / h), -1)
                      for level, (h, w) in enumerate(_shapes(spatial_shapes))]
            locations = reference_points[:, :, None, :, None, :] + torch.stack(scaled, 3)
        elif reference_points.shape[-1] == 4:
            box = reference_points[:, :, None, :, None, :]
            locations = box[..., :2] + offsets / P * box[..., 2:] * 0.5
        else:
            raise ValueError(
                "MSDeformAttn: reference_points must end in 2 (points) or 4 (boxes), "
                f"got shape {tuple(reference_points.shape)}"
            )
        sampler = self.sampler
        if sampler == "auto":  # the one-gather sampler is ~3x faster on CPU; grid_sample is the reference
            sampler = "embedding_bag" if value.device.type == "cpu" else "grid_sample"
        return self.output_proj(_SAMPLERS[sampler](value, spatial_shapes, locations, weights))


def ms_deform_attn_bag(
    value: torch.Tensor,
    spatial_shapes,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """The same as ``ms_deform_attn`` for all levels in one ``F.embedding_bag``: every output row is a
    weighted sum of value rows (4 bilinear corners x L x P per query and head), weights = attention x
    bilinear weight, 0 for corners outside the map. Differentiable in value, locations and weights."""
    shapes = _checked_shapes(spatial_shapes, value, sampling_locations)
    B, S, heads, d = value.shape
    _, Q, _, L, P, _ = sampling_locations.shape
    out_dtype, compute = value.dtype, _compute_dtype(value.dtype)
    device = value.device
    with torch.autocast(device.type, enabled=False):
        size = torch.tensor(shapes, device=device)  # [L, 2] (h, w)
        w_l, h_l = size[:, 1], size[:, 0]
        starts = torch.cat([size.new_zeros(1), (h_l * w_l).cumsum(0)[:-1]])
        # Pixel coordinates as the kernel defines them; non-finite ones land outside the map.
        pix = sampling_locations.to(compute) * size.flip(-1).to(compute)[:, None, :] - 0.5  # [B, Q, heads, L, P, 2]
        far = float(max(max(s) for s in shapes) + 1)  # keeps the long() below in range
        pix = torch.nan_to_num(pix, nan=-2.0, posinf=-2.0, neginf=-2.0).clamp(-2.0, far)
        corner0 = pix.floor()
        frac = pix - corner0
        x0, y0 = corner0[..., 0].long(), corner0[..., 1].long()
        fx, fy = frac[..., 0], frac[..., 1]
        w_l, h_l, starts = (t[:, None] for t in (w_l, h_l, starts))  # broadcast over P
        base = (torch.arange(B, device=device)[:, None] * heads + torch.arange(heads, device=device)) * S
        base = base[:, None, :, None, None]  # [B, 1, heads, 1, 1]: each (image, head) has its own S rows
        attn = attention_weights.to(compute)
        indices, weights = [], []
        for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
            x, y = x0 + dx, y0 + dy
            inside = (x >= 0) & (x < w_l) & (y >= 0) & (y < h_l)
            indices.append(torch.where(inside, base + starts + y * w_l + x, 0))
            bilinear = (fx if dx else 1 - fx) * (fy if dy else 1 - fy)
            weights.append(attn * bilinear * inside)
        indices = torch.stack(indices, -1).view(B * Q * heads, L * P * 4)
        weights = torch.stack(weights, -1).view(B * Q * heads, L * P * 4)
        table = value.to(compute).transpose(1, 2).reshape(B * heads * S, d)
        out = F.embedding_bag(indices, table, per_sample_weights=weights, mode="sum")  # [B * Q * heads, d]
    return out.view(B, Q, heads * d).to(out_dtype)


def ms_deform_attn_gather(
    value: torch.Tensor,
    spatial_shapes,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """The same as ``ms_deform_attn`` with gathers and arithmetic only (no ``grid_sample``, no
    ``embedding_bag``): for export to runtimes that lack or miscompile GridSample (TensorRT drops
    detections with it). Zero padding and ``align_corners=False`` as the reference.

    Sizes stay symbolic: ``spatial_shapes`` may hold ``torch.SymInt`` (``torch.export``) and nothing is
    turned into a Python int, so an exported graph is right at every input size.
    """
    shapes = _shapes(spatial_shapes)
    B, S, heads, d = value.shape
    _, Q, _, L, P, _ = sampling_locations.shape
    out_dtype, compute = value.dtype, _compute_dtype(value.dtype)
    device = value.device
    with torch.autocast(device.type, enabled=False):
        loc, attn = sampling_locations.to(compute), attention_weights.to(compute)
        # Row of (image b, head m) value token t in the flat table: (b * heads + m) * S + t.
        base = (torch.arange(B, device=device)[:, None] * heads + torch.arange(heads, device=device)) * S
        base = base[:, None, :, None]  # [B, 1, heads, 1]
        indices, weights, start = [], [], 0
        for level, (h, w) in enumerate(shapes):
            # Pixel coordinates as the kernel defines them; non-finite or far-away ones are moved to just
            # outside the map (all four corners read zero there, as in the reference; gradients are zero).
            x = (loc[:, :, :, level, :, 0] * w - 0.5).nan_to_num(-2.0, -2.0, -2.0).clamp(-2.0, w + 1.0)
            y = (loc[:, :, :, level, :, 1] * h - 0.5).nan_to_num(-2.0, -2.0, -2.0).clamp(-2.0, h + 1.0)
            x0, y0 = x.floor(), y.floor()
            fx, fy = x - x0, y - y0
            x0, y0 = x0.long(), y0.long()
            a = attn[:, :, :, level]  # [B, Q, heads, P]
            for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
                cx, cy = x0 + dx, y0 + dy
                inside = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
                flat = base + start + cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1)  # in range even when outside
                indices.append(flat)
                weights.append(a * (fx if dx else 1 - fx) * (fy if dy else 1 - fy) * inside.to(compute))
            start = start + h * w
        indices = torch.stack(indices, -1).reshape(B, Q, heads, -1)  # [B, Q, heads, L * 4 * P]
        weights = torch.stack(weights, -1).reshape(B, Q, heads, 1, -1)
        table = value.to(compute).transpose(1, 2).reshape(-1, d)  # [B * heads * S, d]
        sampled = table[indices]  # [B, Q, heads, L * 4 * P, d]
        out = (weights @ sampled).reshape(B, Q, heads * d)
    return out.to(out_dtype)


_SAMPLERS = {"grid_sample": ms_deform_attn, "embedding_bag": ms_deform_attn_bag, "gather": ms_deform_attn_gather}


def set_sampler(model: nn.Module, sampler: str) -> nn.Module:
    """Set ``sampler`` (``"auto"``, ``"grid_sample"``, ``"embedding_bag"`` or ``"gather"``) on every
    ``MSDeformAttn`` in ``model``; returns ``model``. ``"gather"`` is the one to export for TensorRT."""
    if sampler != "auto" and sampler not in _SAMPLERS:
        raise ValueError(f"set_sampler: sampler must be 'auto' or one of {sorted(_SAMPLERS)}, got {sampler!r}")
    for module in model.modules():
        if isinstance(module, MSDeformAttn):
            module.sampler = sampler
    return model
