"""PanopticSegFormer: output shapes, query selection, predict's format and category mapping, rebuild from config."""
import numpy as np
import pytest
import torch

from heads.panoptic_segformer import MaskAttention
from tasks.panoptic import PanopticSegFormer

SMALL = dict(num_queries=12, hidden_dim=64, nheads=8, enc_layers=1, dec_layers=2, dim_feedforward=64,
             thing_mask_layers=2, stuff_mask_layers=2, backbone_args={"depths": (1, 1, 1, 1)})


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return PanopticSegFormer("pvt_v2_b0", 3, 2, category_ids=[1, 2, 5, 10, 11],
                             class_names=["a", "b", "c", "d", "e"], **SMALL).eval()


def test_output_shapes(model):
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96))
    assert out["pred_logits"].shape == (2, 12, 3) and out["pred_boxes"].shape == (2, 12, 4)
    assert len(out["aux_outputs"]) == 1
    assert out["thing_masks"].shape == (2, 12, 8, 12) and len(out["thing_aux_masks"]) == 2
    assert out["stuff_masks"].shape == (2, 2, 8, 12) and len(out["stuff_aux_masks"]) == 2
    assert out["stuff_logits"].shape == (2, 2) and len(out["stuff_aux_logits"]) == 1
    assert torch.equal(out["thing_index"], torch.arange(12).expand(2, 12))
    assert (out["thing_masks"] >= 0).all()  # ReLU masks


def test_selected_queries_get_the_same_masks(model):
    """The thing mask decoder has no self-attention: decoding a subset gives those queries' masks unchanged;
    padding rows are marked -1."""
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        full = model(x)
        part = model(x, select=lambda out: [torch.tensor([3, 7]), torch.tensor([5])])
    assert part["thing_index"].tolist() == [[3, 7], [5, -1]]
    torch.testing.assert_close(part["thing_masks"][0], full["thing_masks"][0, [3, 7]], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(part["thing_masks"][1, :1], full["thing_masks"][1, [5]], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(part["stuff_masks"], full["stuff_masks"])


def test_mask_attention_matches_explicit_formula():
    torch.manual_seed(0)
    attn = MaskAttention(16, 2)
    shapes = [(4, 4), (2, 2), (1, 1)]
    q, k = torch.randn(1, 3, 16), torch.randn(1, 21, 16)
    out, mask = attn(q, k, k, shapes)
    logits = torch.einsum("bnhd,blhd->bnlh", attn.q(q).view(1, 3, 2, 8), attn.k(k).view(1, 21, 2, 8)) / 8**0.5
    l1 = attn.linear_l1(logits[:, :, :16])
    l2 = attn.linear_l2(logits[:, :, 16:20]).permute(0, 1, 3, 2).reshape(3, 2, 2, 2)
    l2 = torch.nn.functional.interpolate(l2, size=(4, 4), mode="bilinear").reshape(1, 3, 2, 16).permute(0, 1, 3, 2)
    l3 = attn.linear_l3(logits[:, :, 20:]).permute(0, 1, 3, 2).reshape(3, 2, 1, 1)
    l3 = torch.nn.functional.interpolate(l3, size=(4, 4), mode="bilinear").reshape(1, 3, 2, 16).permute(0, 1, 3, 2)
    expected = attn.linear(torch.cat([l1, l2, l3], -1)).view(1, 3, 4, 4)
    torch.testing.assert_close(mask, expected)
    value = (logits.permute(0, 3, 1, 2).softmax(-1) @ attn.v(k).view(1, 21, 2, 8).transpose(1, 2))
    torch.testing.assert_close(out, attn.proj(value.transpose(1, 2).reshape(1, 3, 16)))


def test_predict_format_and_category_ids(model):
    image = (np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)
    model.preprocessing = type(model.preprocessing)(resize="short_side", size=(64, 128))
    with torch.no_grad():  # make every stuff query confident and its masks large
        model.head.cls_stuff_branches[-1].bias.fill_(5.0)
        model.head.stuff_mask_head.attnen.linear[0].bias.fill_(2.0)
    result = model.predict(image)
    assert result["panoptic"].shape == (50, 70) and result["panoptic"].dtype == np.int32
    assert result["segments"], "expected at least one segment"
    ids = {s["id"] for s in result["segments"]}
    assert set(np.unique(result["panoptic"]).tolist()) - {0} == ids
    for s in result["segments"]:
        assert set(s) == {"id", "category_id", "isthing", "score", "label"}
        assert s["category_id"] == (1, 2, 5, 10, 11)[s["label"]] and s["isthing"] == (s["category_id"] in (1, 2, 5))


def test_config_rebuilds_the_model(model):
    again = PanopticSegFormer(**model.config)
    again.load_state_dict(model.state_dict())
    assert again.category_ids == (1, 2, 5, 10, 11) and again.class_names == ("a", "b", "c", "d", "e")
    assert again.merge_options == model.merge_options


def test_bad_arguments():
    with pytest.raises(ValueError, match="category_ids"):
        PanopticSegFormer("pvt_v2_b0", 3, 2, category_ids=[1, 2, 3], **SMALL)
    with pytest.raises(ValueError, match="num_stuff_classes"):
        PanopticSegFormer("pvt_v2_b0", 3, 0, **SMALL)
    with pytest.raises(ValueError, match="merge"):
        PanopticSegFormer("pvt_v2_b0", 3, 2, merge={"overlap": 0.1}, **SMALL)


def test_input_errors_name_this_model(model):
    """The input checks are detection's (image_sizes), but the error names the model the user called."""
    with pytest.raises(ValueError, match=r"^PanopticSegFormer: each pixel_mask must be 1 on a non-empty top-left"):
        model(torch.randn(1, 3, 64, 64), torch.zeros(1, 64, 64))
    with pytest.raises(ValueError, match=r"^PanopticSegFormer: pixel_values must be a Tensor\[B, C, H, W\]"):
        model(torch.randn(3, 64, 64))


@pytest.mark.slow
def test_onnx_export_and_predict_from_onnx(model, tmp_path):
    """tools/export.py's path: the network up to the merging with dynamic sizes, checked by ONNX Runtime at two
    other sizes; predict through the ONNX file merges its outputs into the same panoptic map."""
    pytest.importorskip("onnxruntime")
    from tasks.common.export import export_onnx, load_onnx_predictor

    exported = export_onnx(model, tmp_path / "panoptic.onnx", height=96, width=128)
    assert exported.outputs == ("pred_logits", "pred_boxes", "thing_masks", "stuff_masks", "stuff_logits")
    image = (np.random.default_rng(1).random((70, 90, 3)) * 255).astype(np.uint8)
    ours, theirs = model.predict(image), load_onnx_predictor(exported.path).predict(image)
    assert np.array_equal(ours["panoptic"], theirs["panoptic"])
    assert [s["category_id"] for s in ours["segments"]] == [s["category_id"] for s in theirs["segments"]]


def test_training_step_without_things():
    """An image with stuff only: the query filter keeps no query, the thing terms are 0 and every parameter of the
    mask decoders still takes part in the graph (DistributedDataParallel needs that)."""
    from tasks.panoptic import PanopticCriterion

    torch.manual_seed(0)
    model = PanopticSegFormer("pvt_v2_b0", 3, 2, **SMALL).train()
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, :32], masks[1, 32:] = True, True
    targets = [{"labels": torch.tensor([3, 4]), "masks": masks, "boxes": torch.tensor([[0.5, 0.25, 1, 0.5], [0.5, 0.75, 1, 0.5]])}]
    criterion = PanopticCriterion(3, 2)
    selector = criterion.selector(targets)
    out = model(torch.randn(1, 3, 64, 64), select=selector)
    assert out["thing_masks"].shape[:2] == (1, 0)
    losses = criterion(out, targets, selector)
    assert float(losses["loss_mask_things"].detach()) == 0 and float(losses["things_ratio"]) == pytest.approx(1 / 3)
    losses["loss"].backward()
    unused = [n for n, p in model.head.named_parameters() if p.grad is None]
    assert not [n for n in unused if "mask_head" in n], unused
