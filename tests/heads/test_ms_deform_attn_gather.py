"""The gather-only deformable-attention sampler (for export) against the grid_sample reference: forward and
gradients in fp32 at atol 1e-5, points outside the maps, non-finite points, set_sampler on a whole model."""
import pytest
import torch

from heads.deformable_detr import DeformableDETRConfig, DeformableDETRHead, MSDeformAttn, ms_deform_attn
from heads.deformable_detr.ms_deform_attn import ms_deform_attn_gather, set_sampler

SHAPES = [(6, 8), (3, 5), (2, 2), (1, 3)]  # non-square, odd, and 1-pixel-high levels whose borders matter


def _inputs(B=2, Q=30, heads=4, d=8, P=4, spread=0.5, dtype=torch.float32):
    S = sum(h * w for h, w in SHAPES)
    value = torch.randn(B, S, heads, d, dtype=dtype)
    # spread 0.5: a third of the points lie outside [0, 1], many of them with only some corners inside.
    loc = torch.rand(B, Q, heads, len(SHAPES), P, 2, dtype=dtype) * (1 + 2 * spread) - spread
    weights = torch.rand(B, Q, heads, len(SHAPES) * P, dtype=dtype).softmax(-1).view(B, Q, heads, len(SHAPES), P)
    return value, loc, weights


def _forward_backward(sample, value, loc, weights):
    inputs = [t.clone().requires_grad_(True) for t in (value, loc, weights)]
    out = sample(inputs[0], SHAPES, inputs[1], inputs[2])
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return [out.detach()] + [t.grad for t in inputs]


def test_forward_and_gradients_match_grid_sample_fp32():
    value, loc, weights = _inputs()
    outside = ((loc < 0) | (loc > 1)).any(-1).float().mean()
    assert 0.2 < outside < 0.8  # the zero padding is really exercised
    ref = _forward_backward(ms_deform_attn, value, loc, weights)
    got = _forward_backward(ms_deform_attn_gather, value, loc, weights)
    for name, a, b in zip(("output", "d value", "d locations", "d weights"), got, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=lambda m: f"{name}: {m}")


def test_gradcheck_float64():
    value, loc, weights = _inputs(B=1, Q=2, heads=2, d=2, P=2, dtype=torch.float64)
    for t in (value, loc, weights):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v, l, a: ms_deform_attn_gather(v, SHAPES, l, a), (value, loc, weights))


def test_points_far_outside_and_non_finite_read_zero():
    value, loc, weights = _inputs(B=1, Q=6, heads=2, d=3, P=1)
    loc[0, 0] = -5.0
    loc[0, 1] = 7.0
    loc[0, 2] = float("nan")
    loc[0, 3] = float("inf")
    loc[0, 4, ..., 0] = -0.01  # just left of the map: the right corners are inside with small weight
    out = ms_deform_attn_gather(value, SHAPES, loc, weights)
    assert torch.equal(out[0, :4], torch.zeros_like(out[0, :4]))
    torch.testing.assert_close(out[0, 4:], ms_deform_attn(value, SHAPES, loc, weights)[0, 4:], atol=1e-6, rtol=0)


def test_tensor_spatial_shapes_and_half_inputs():
    value, loc, weights = _inputs(B=1, Q=4)
    ref = ms_deform_attn(value, SHAPES, loc, weights)
    torch.testing.assert_close(ms_deform_attn_gather(value, torch.tensor(SHAPES), loc, weights), ref, atol=1e-5, rtol=0)
    half = ms_deform_attn_gather(value.bfloat16(), SHAPES, loc, weights)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), ref, atol=5e-2, rtol=0)


def test_set_sampler_on_a_whole_head_matches_reference():
    torch.manual_seed(0)
    config = DeformableDETRConfig(num_classes=5, num_queries=7, num_feature_levels=3, hidden_dim=32, nheads=2,
                                  enc_layers=1, dec_layers=2, dim_feedforward=32, with_box_refine=True)
    head = DeformableDETRHead([16, 24], config).eval()
    with torch.no_grad():
        for m in head.modules():
            if isinstance(m, MSDeformAttn):  # large offsets: many samples leave the maps
                m.sampling_offsets.weight.normal_(0, 0.5)
    features = [torch.randn(2, 16, 10, 12), torch.randn(2, 24, 5, 6)]
    outs = {}
    for sampler in ("grid_sample", "gather"):
        assert set_sampler(head, sampler) is head
        assert {m.sampler for m in head.modules() if isinstance(m, MSDeformAttn)} == {sampler}
        sources = head.project(features)
        with torch.no_grad():
            outs[sampler] = head(sources, [s.new_zeros(s.shape[0], *s.shape[-2:], dtype=torch.bool) for s in sources])
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(outs["gather"][key], outs["grid_sample"][key], atol=1e-5, rtol=0)


def test_set_sampler_rejects_unknown_names():
    with pytest.raises(ValueError, match="sampler must be 'auto' or one of .*'gather'.*got 'cuda'"):
        set_sampler(MSDeformAttn(32, 2, 2, 2), "cuda")
