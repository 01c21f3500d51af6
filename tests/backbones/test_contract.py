"""The API contract, run over every registered backbone."""
import pytest
import torch

from backbones import build_backbone, list_backbones, register_backbone

STAGES = ("stage1", "stage2", "stage3", "stage4")
REQUIRED = {f"pvt_v2_b{i}" for i in range(6)} | {f"mit_b{i}" for i in range(6)} | {"pvt_v2_b2_li", "resnet50"}


def test_registered_names():
    assert REQUIRED <= set(list_backbones())
    assert list_backbones() == sorted(list_backbones())


@pytest.mark.parametrize("name", list_backbones())
def test_channels_strides_and_key_order(name):
    model = build_backbone(name, out_indices=(0, 1, 2, 3)).eval()
    assert model.out_features == STAGES
    assert set(model.feature_channels) == set(model.feature_strides) == set(STAGES)
    assert not hasattr(model, "out_channels") and not hasattr(model, "init_weights")
    children = [n for n, _ in model.named_children() if n != "stem"]
    assert children[:4] == list(STAGES)  # torchvision's IntermediateLayerGetter runs children in order
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        out = model(x)
    assert list(out) == list(STAGES)
    for stage, feat in out.items():
        stride = model.feature_strides[stage]
        assert feat.shape == (2, model.feature_channels[stage], 64 // stride, 96 // stride), stage
        assert feat.dtype == torch.float32 and torch.isfinite(feat).all()


@pytest.mark.parametrize("name", ["pvt_v2_b0", "resnet50"])
def test_subsets(name):
    x = torch.randn(1, 3, 64, 64)
    assert list(build_backbone(name).eval()(x)) == ["stage4"]  # the default: last stage only
    for kwargs, expected in [
        (dict(out_features=("stage2", "stage4")), ["stage2", "stage4"]),
        (dict(out_indices=[1, 3]), ["stage2", "stage4"]),
        (dict(out_indices=(-3, -1)), ["stage2", "stage4"]),
        (dict(out_features=["stage1"], out_indices=[0]), ["stage1"]),
        (dict(out_indices=(0, 2)), ["stage1", "stage3"]),
    ]:
        model = build_backbone(name, **kwargs).eval()
        assert list(model.out_features) == expected
        with torch.no_grad():
            assert list(model(x)) == expected


def test_sizes_follow_the_patch_embedding_formula():
    model = build_backbone("pvt_v2_b0", out_indices=(0, 1, 2, 3)).eval()
    for h, w in [(97, 131), (200, 296), (32, 32), (33, 63)]:
        with torch.no_grad():
            out = model(torch.randn(1, 3, h, w))
        for feat, (k, s) in zip(out.values(), [(7, 4), (3, 2), (3, 2), (3, 2)]):
            h, w = ((n + 2 * (k // 2) - k) // s + 1 for n in (h, w))
            assert feat.shape[-2:] == (h, w)


def test_overrides_match_pvt_v2_config_knobs():
    model = build_backbone(
        "pvt_v2_b0",
        out_indices=(0, 1, 2, 3),
        num_channels=4,
        depths=[1, 1, 2, 1],
        hidden_sizes=[16, 32, 64, 128],
        num_attention_heads=[1, 2, 4, 8],
        mlp_ratios=[2, 2, 2, 2],
        sr_ratios=[4, 2, 1, 1],
        patch_sizes=[7, 3, 3, 3],
        strides=[4, 2, 2, 2],
        hidden_act="relu",
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        drop_path_rate=0.2,
        layer_norm_eps=1e-5,
        qkv_bias=False,
        linear_attention=False,
    ).eval()
    assert model.feature_channels == {"stage1": 16, "stage2": 32, "stage3": 64, "stage4": 128}
    assert model.stage1.blocks[0].attn.q.bias is None
    assert len(model.stage3.blocks) == 2
    with torch.no_grad():
        out = model(torch.randn(1, 4, 64, 64))  # a 4-channel (e.g. RGB + NIR) stem
    assert [f.shape[1] for f in out.values()] == [16, 32, 64, 128]


def test_register_backbone_refuses_duplicates():
    with pytest.raises(ValueError, match="pvt_v2_b0"):
        register_backbone("pvt_v2_b0")(lambda **kw: None)
