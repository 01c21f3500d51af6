"""Multi-scale deformable attention: both samplers (grid_sample = reference, embedding_bag = fast path)
against a loop-based bilinear sampler written here, gradcheck in float64, against each other, Hugging
Face's implementation, the reference init and autocast."""
import math

import pytest
import torch

from heads.deformable_detr import MSDeformAttn, ms_deform_attn, ms_deform_attn_bag

SHAPES = [(6, 8), (3, 4), (2, 2)]  # non-square, with a 2x2 level whose border matters
SAMPLERS = pytest.mark.parametrize("sample", [ms_deform_attn, ms_deform_attn_bag], ids=["grid_sample", "bag"])


def _inputs(B=2, Q=5, heads=2, d=3, P=3, dtype=torch.float32, spread=0.3):
    S = sum(h * w for h, w in SHAPES)
    value = torch.randn(B, S, heads, d, dtype=dtype)
    # Locations reach outside [0, 1] so the zero padding is exercised.
    loc = (torch.rand(B, Q, heads, len(SHAPES), P, 2, dtype=dtype) * (1 + 2 * spread) - spread)
    weights = torch.rand(B, Q, heads, len(SHAPES) * P, dtype=dtype).softmax(-1).view(B, Q, heads, len(SHAPES), P)
    return value, loc, weights


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
    value, loc, weights = _inputs(dtype=torch.float64)
    got = sample(value, torch.tensor(SHAPES), loc, weights)
    assert got.shape == (2, 5, 6)
    torch.testing.assert_close(got, _loop_reference(value, SHAPES, loc, weights), atol=1e-10, rtol=0)


@SAMPLERS
def test_gradcheck_float64(sample):
    value, loc, weights = _inputs(B=1, Q=2, heads=2, d=2, P=2, dtype=torch.float64)
    # Random locations are (almost surely) off pixel boundaries, where bilinear sampling has kinks.
    for t in (value, loc, weights):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v, l, a: sample(v, SHAPES, l, a), (value, loc, weights))


def test_fast_path_matches_reference_float32():
    value, loc, weights = _inputs(B=2, Q=40, heads=4, d=8, P=4)
    grads = []
    for sample in (ms_deform_attn, ms_deform_attn_bag):
        inputs = [t.clone().requires_grad_(True) for t in (value, loc, weights)]
        out = sample(inputs[0], SHAPES, inputs[1], inputs[2])
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append([out.detach()] + [t.grad.nan_to_num() for t in inputs])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_fast_path_non_finite_locations_read_zero():
    """As in the original kernel (grid_sample returns NaN there)."""
    value, loc, weights = _inputs()
    loc[0, 0, 0, 0, 0] = torch.tensor([float("inf"), 0.5])
    loc[1, 2, 1, 2, 1] = torch.tensor([0.5, float("nan")])
    zeroed = weights.clone()
    zeroed[0, 0, 0, 0, 0] = zeroed[1, 2, 1, 2, 1] = 0
    got = ms_deform_attn_bag(value, SHAPES, loc, weights)
    torch.testing.assert_close(got, ms_deform_attn_bag(value, SHAPES, loc, zeroed))


@SAMPLERS
def test_autocast_runs_in_float32(sample):
    value, loc, weights = _inputs()
    ref = ms_deform_attn(value, SHAPES, loc, weights)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = sample(value.bfloat16(), SHAPES, loc.bfloat16(), weights.bfloat16())
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


# --- against Hugging Face -----------------------------------------------------------------------------

transformers = pytest.importorskip("transformers")
hf_ddetr = pytest.importorskip("transformers.models.deformable_detr.modeling_deformable_detr")


def test_core_matches_hf():
    value, loc, weights = _inputs()
    shapes = torch.tensor(SHAPES)
    start = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
    ref = hf_ddetr.MultiScaleDeformableAttention()(value, shapes, SHAPES, start, loc, weights, 64)
    torch.testing.assert_close(ms_deform_attn(value, shapes, loc, weights), ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("sampler", ["grid_sample", "embedding_bag"])
@pytest.mark.parametrize("coords", [2, 4])
def test_module_matches_hf(coords, sampler):
    config = transformers.DeformableDetrConfig(d_model=32, num_feature_levels=len(SHAPES), use_timm_backbone=False)
    ref = hf_ddetr.DeformableDetrMultiscaleDeformableAttention(config, num_heads=4, n_points=3).eval()
    ours = MSDeformAttn(d_model=32, n_levels=len(SHAPES), n_heads=4, n_points=3, sampler=sampler).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0, 0.3)
    ref.load_state_dict(ours.state_dict())
    B, Q, S = 2, 7, sum(h * w for h, w in SHAPES)
    query, pos, memory = torch.randn(B, Q, 32), torch.randn(B, Q, 32), torch.randn(B, S, 32)
    refs = torch.rand(B, Q, len(SHAPES), coords)
    padding = torch.rand(B, S) < 0.3
    shapes = torch.tensor(SHAPES)
    start = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
    with torch.no_grad():
        got = ours(query + pos, refs, memory, shapes, padding)
        want, _ = ref(
            query, attention_mask=~padding, encoder_hidden_states=memory, position_embeddings=pos,
            reference_points=refs, spatial_shapes=shapes, spatial_shapes_list=SHAPES, level_start_index=start,
        )
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
