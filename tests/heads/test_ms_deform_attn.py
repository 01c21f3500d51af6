"""Multi-scale deformable attention: both samplers (grid_sample = reference, embedding_bag = fast path)
against a loop-based bilinear sampler written here, gradcheck in float64, against each other, the reference
init and autocast. Hugging Face's implementation is in test_ms_deform_attn_parity.py."""
import math

import pytest
import torch

from heads.deformable_detr import MSDeformAttn, ms_deform_attn, ms_deform_attn_bag
from tests.utils import LEVEL_SHAPES, deform_attn_inputs

SAMPLERS = pytest.mark.parametrize("sample", [ms_deform_attn, ms_deform_attn_bag], ids=["grid_sample", "bag"])


def _loop_reference(value, shapes, loc, weights):
    """The original kernel's definition: pixel (x, y) = loc * (w, h) - 0.5, bilinear over the 4 corners,
    corners outside the map read 0."""
    B, S, heads, d = value.shape
    _, Q, _, L, P, _ = loc.shape
    out = torch.zeros(B, Q, heads, d, dtype=value.dtype)
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    for b in range(B):
        for q in range(Q):
            for m in range(heads):
                for lvl, (h, w) in enumerate(shapes):
                    for p in range(P):
                        x = loc[b, q, m, lvl, p, 0].item() * w - 0.5
                        y = loc[b, q, m, lvl, p, 1].item() * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        sample = torch.zeros(d, dtype=value.dtype)
                        for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                            for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                                if 0 <= yy < h and 0 <= xx < w:
                                    sample += wy * wx * value[b, starts[lvl] + yy * w + xx, m]
                        out[b, q, m] += weights[b, q, m, lvl, p] * sample
    return out.flatten(2)


@SAMPLERS
def test_matches_loop_reference(sample):
    value, loc, weights = deform_attn_inputs(dtype=torch.float64)
    got = sample(value, torch.tensor(LEVEL_SHAPES), loc, weights)
    assert got.shape == (2, 5, 6)
    torch.testing.assert_close(got, _loop_reference(value, LEVEL_SHAPES, loc, weights), atol=1e-10, rtol=0)


@SAMPLERS
def test_gradcheck_float64(sample):
    value, loc, weights = deform_attn_inputs(B=1, Q=2, heads=2, d=2, P=2, dtype=torch.float64)
    # Random locations are (almost surely) off pixel boundaries, where bilinear sampling has kinks.
    for t in (value, loc, weights):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v, l, a: sample(v, LEVEL_SHAPES, l, a), (value, loc, weights))


def test_fast_path_matches_reference_float32():
    value, loc, weights = deform_attn_inputs(B=2, Q=40, heads=4, d=8, P=4)
    grads = []
    for sample in (ms_deform_attn, ms_deform_attn_bag):
        inputs = [t.clone().requires_grad_(True) for t in (value, loc, weights)]
        out = sample(inputs[0], LEVEL_SHAPES, inputs[1], inputs[2])
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append([out.detach()] + [t.grad.nan_to_num() for t in inputs])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_fast_path_non_finite_locations_read_zero():
    """As in the original kernel (grid_sample returns NaN there)."""
    value, loc, weights = deform_attn_inputs()
    loc[0, 0, 0, 0, 0] = torch.tensor([float("inf"), 0.5])
    loc[1, 2, 1, 2, 1] = torch.tensor([0.5, float("nan")])
    zeroed = weights.clone()
    zeroed[0, 0, 0, 0, 0] = zeroed[1, 2, 1, 2, 1] = 0
    got = ms_deform_attn_bag(value, LEVEL_SHAPES, loc, weights)
    torch.testing.assert_close(got, ms_deform_attn_bag(value, LEVEL_SHAPES, loc, zeroed))


@SAMPLERS
def test_autocast_runs_in_float32(sample):
    value, loc, weights = deform_attn_inputs()
    ref = ms_deform_attn(value, LEVEL_SHAPES, loc, weights)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = sample(value.bfloat16(), LEVEL_SHAPES, loc.bfloat16(), weights.bfloat16())
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), ref, atol=0.05, rtol=0.05)


def test_reference_init():
    m = MSDeformAttn(d_model=32, n_levels=3, n_heads=8, n_points=4)
    bias = m.sampling_offsets.bias.view(8, 3, 4, 2)
    torch.testing.assert_close(bias[0, 1, 2], torch.tensor([3.0, 0.0]))  # head 0 points along +x, point 2 at 3
    torch.testing.assert_close(bias[1, 0, 0], torch.tensor([1.0, 1.0]))  # 45 degrees, on the unit square
    torch.testing.assert_close(bias[6, 2, 3], torch.tensor([0.0, -4.0]), atol=1e-6, rtol=0)
    assert (bias[:, 0] == bias[:, 2]).all()  # same rays on every level
    assert m.sampling_offsets.weight.abs().sum() == 0 and m.attention_weights.weight.abs().sum() == 0
    assert m.attention_weights.bias.abs().sum() == 0 and m.value_proj.bias.abs().sum() == 0


def test_errors():
    m = MSDeformAttn(d_model=16, n_levels=1, n_heads=2, n_points=2)
    with pytest.raises(ValueError, match="reference_points"):
        m(torch.randn(1, 3, 16), torch.rand(1, 3, 1, 3), torch.randn(1, 4, 16), [(2, 2)])
    with pytest.raises(ValueError, match="spatial_shapes"):
        m(torch.randn(1, 3, 16), torch.rand(1, 3, 1, 2), torch.randn(1, 5, 16), [(2, 2)])
    with pytest.raises(ValueError, match="sampler"):
        MSDeformAttn(d_model=16, sampler="cuda")
