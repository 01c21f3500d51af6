"""Multi-scale deformable attention against Hugging Face's: the sampling core and the whole module."""
import pytest
import torch

from heads.deformable_detr import MSDeformAttn, ms_deform_attn
from tests.utils import LEVEL_SHAPES, deform_attn_inputs

transformers = pytest.importorskip("transformers")
hf_ddetr = pytest.importorskip("transformers.models.deformable_detr.modeling_deformable_detr")


def test_core_matches_hf():
    value, loc, weights = deform_attn_inputs()
    shapes = torch.tensor(LEVEL_SHAPES)
    start = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
    ref = hf_ddetr.MultiScaleDeformableAttention()(value, shapes, LEVEL_SHAPES, start, loc, weights, 64)
    # the sampling core alone: the same bilinear weights and sums, O(1) inputs, a few float32 ulps apart
    torch.testing.assert_close(ms_deform_attn(value, shapes, loc, weights), ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("sampler", ["grid_sample", "embedding_bag"])
@pytest.mark.parametrize("coords", [2, 4])
def test_module_matches_hf(coords, sampler):
    config = transformers.DeformableDetrConfig(
        d_model=32, num_feature_levels=len(LEVEL_SHAPES), use_timm_backbone=False
    )
    ref = hf_ddetr.DeformableDetrMultiscaleDeformableAttention(config, num_heads=4, n_points=3).eval()
    ours = MSDeformAttn(d_model=32, n_levels=len(LEVEL_SHAPES), n_heads=4, n_points=3, sampler=sampler).eval()
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_(0, 0.3)
    ref.load_state_dict(ours.state_dict())
    B, Q, S = 2, 7, sum(h * w for h, w in LEVEL_SHAPES)
    query, pos, memory = torch.randn(B, Q, 32), torch.randn(B, Q, 32), torch.randn(B, S, 32)
    refs = torch.rand(B, Q, len(LEVEL_SHAPES), coords)
    padding = torch.rand(B, S) < 0.3
    shapes = torch.tensor(LEVEL_SHAPES)
    start = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
    with torch.no_grad():
        got = ours(query + pos, refs, memory, shapes, padding)
        want, _ = ref(
            query, attention_mask=~padding, encoder_hidden_states=memory, position_embeddings=pos,
            reference_points=refs, spatial_shapes=shapes, spatial_shapes_list=LEVEL_SHAPES, level_start_index=start,
        )
    # the module adds three small linear layers (d_model 32) around the core: ~1e-6, an order below the bound
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)

