"""DeformableDETR: Hugging Face parity (single-/multi-scale, box refinement, two-stage; 4.x and 5.x key
names), our checkpoint, batch invariance under padding, and loud errors.

Architecture in these tests: the full ResNet-50 (frozen BN), but 2 encoder and 2 decoder layers, 30 queries,
7 classes and inputs of about 100x100 pixels, to keep each file well under a minute on a busy CPU. HF builds
its timm ResNet-50 offline (``use_pretrained_backbone=False`` is its default for the timm backbone).
"""
import pytest
import torch

from heads.deformable_detr import MSDeformAttn
from tasks.detection.model import DeformableDETR
from tests.utils import perturb

transformers = pytest.importorskip("transformers")

SMALL = dict(encoder_layers=2, decoder_layers=2, num_queries=30, two_stage_num_proposals=30, num_labels=7)
VARIANTS = {
    "base": {},
    "single_scale": dict(num_feature_levels=1),
    "single_scale_dc5": dict(num_feature_levels=1, dilation=True),
    "box_refine": dict(with_box_refine=True),
    "two_stage": dict(with_box_refine=True, two_stage=True),
}


def _perturb_frozen_bn(model):
    """Frozen BN keeps its affine as buffers, which ``perturb`` leaves alone; timm zero-initialises each
    block's last BN scale, which would switch every residual branch off and hide backbone mismatches."""
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith(("bn1.weight", "bn2.weight", "bn3.weight", "downsample.1.weight")):
                b.uniform_(0.2, 0.6)
            elif name.endswith(("bn1.bias", "bn2.bias", "bn3.bias", "downsample.1.bias")):
                b.normal_(0, 0.1)
    return model


def _hf(tmp_path, **config):
    ref = transformers.DeformableDetrForObjectDetection(transformers.DeformableDetrConfig(**SMALL, **config))
    _perturb_frozen_bn(perturb(ref))
    ref.save_pretrained(tmp_path)  # transformers 5.x writes the 4.x key names
    return ref


def _max_err(ours, ref, x):
    with torch.no_grad():
        a = ours(x)
        b = ref(pixel_values=x)
    assert a["pred_logits"].shape == b.logits.shape and a["pred_boxes"].shape == b.pred_boxes.shape
    return max((a["pred_logits"] - b.logits).abs().max().item(), (a["pred_boxes"] - b.pred_boxes).abs().max().item())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_hf_folder_parity(tmp_path, variant):
    ref = _hf(tmp_path, **VARIANTS[variant])
    ours = DeformableDETR.from_pretrained(tmp_path)
    assert not ours.training
    assert ours.config["with_box_refine"] == ref.config.with_box_refine
    assert ours.config["two_stage"] == ref.config.two_stage
    for sampler in ("embedding_bag", "grid_sample"):  # the CPU default and the reference path
        for m in ours.modules():
            if isinstance(m, MSDeformAttn):
                m.sampler = sampler
        for x in (torch.randn(1, 3, 96, 128), torch.randn(2, 3, 100, 84)):  # non-square; two unpadded images
            err = _max_err(ours, ref, x)
            assert err <= 1e-4, f"{variant} {sampler} {tuple(x.shape)}: max abs diff {err:.3g}"


@pytest.mark.parametrize("variant", ["base", "box_refine"])
def test_hf_5x_in_memory_names(tmp_path, variant):
    ref = _hf(tmp_path, **VARIANTS[variant])
    state = ref.state_dict()
    assert "model.decoder.layers.0.self_attn.o_proj.weight" in state and "model.backbone.model.conv1.weight" in state
    torch.save(state, tmp_path / "v5.bin")  # config.json beside it describes the architecture
    ours = DeformableDETR.from_pretrained(tmp_path / "v5.bin")
    assert _max_err(ours, ref, torch.randn(1, 3, 96, 128)) <= 1e-4


def test_our_checkpoint_round_trip(tmp_path):
    model = perturb(DeformableDETR(num_classes=5, num_queries=10, enc_layers=1, dec_layers=2, with_box_refine=True))
    torch.save({"model": model.state_dict(), "meta": {"task": "detection", "model": model.config}}, tmp_path / "c.pth")
    loaded = DeformableDETR.from_pretrained(tmp_path / "c.pth")
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    torch.testing.assert_close(a["pred_logits"], b["pred_logits"], atol=0, rtol=0)
    assert DeformableDETR(**model.config).config == model.config


def test_shared_heads_without_refinement(tmp_path):
    _hf(tmp_path)
    ours = DeformableDETR.from_pretrained(tmp_path)
    assert len(ours.head.class_embed) == 1 and len(ours.head.bbox_embed) == 1  # one head for every layer


def test_per_layer_heads_into_shared_config_is_an_error(tmp_path):
    ref = _hf(tmp_path, with_box_refine=True)
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    state["bbox_embed.1.layers.0.weight"] += 1
    state.pop("model.decoder.bbox_embed.1.layers.0.weight")
    torch.save({"model": state, "meta": {"task": "detection", "model": dict(
        DeformableDETR(num_classes=7, num_queries=30, enc_layers=2, dec_layers=2).config)}}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="per-layer heads"):
        DeformableDETR.from_pretrained(tmp_path / "bad.pth")


# --- batch invariance ---------------------------------------------------------------------------------


def _padded_batch(images):
    H = max(x.shape[-2] for x in images)
    W = max(x.shape[-1] for x in images)
    batch = torch.zeros(len(images), 3, H, W)
    mask = torch.zeros(len(images), H, W, dtype=torch.long)
    for i, x in enumerate(images):
        batch[i, :, : x.shape[-2], : x.shape[-1]] = x
        mask[i, : x.shape[-2], : x.shape[-1]] = 1
    return batch, mask


@pytest.mark.parametrize("variant", ["base", "two_stage"])
def test_batch_invariance(variant):
    cfg = {k: v for k, v in VARIANTS[variant].items()}
    model = perturb(DeformableDETR(num_classes=7, num_queries=30, enc_layers=2, dec_layers=2, **cfg))
    # Sizes that are not multiples of 32, and two images that share a size (one backbone pass for them).
    images = [torch.randn(3, 96, 128), torch.randn(3, 70, 90), torch.randn(3, 96, 128)]
    batch, mask = _padded_batch(images)
    with torch.no_grad():
        together = model(batch, mask)
        for i, x in enumerate(images):
            alone = model(x[None])
            for key in ("pred_logits", "pred_boxes"):
                err = (together[key][i] - alone[key][0]).abs().max().item()
                assert err <= 1e-4, f"image {i} {key}: max abs diff {err:.3g}"
            aux = (together["aux_outputs"][0]["pred_boxes"][i] - alone["aux_outputs"][0]["pred_boxes"][0]).abs().max()
            assert aux <= 1e-4


def test_hf_is_not_batch_invariant_but_we_are(tmp_path):
    """Why the grouping exists: HF's shared padded backbone pass changes a padded image's outputs."""
    ref = _hf(tmp_path)
    ours = DeformableDETR.from_pretrained(tmp_path)
    images = [torch.randn(3, 96, 128), torch.randn(3, 70, 90)]
    batch, mask = _padded_batch(images)
    with torch.no_grad():
        hf_alone = ref(pixel_values=images[1][None]).logits[0]
        hf_padded = ref(pixel_values=batch, pixel_mask=mask).logits[1]
        ours_padded = ours(batch, mask)["pred_logits"][1]
    assert (hf_alone - hf_padded).abs().max() > 1e-3
    assert (hf_alone - ours_padded).abs().max() <= 1e-4


# --- errors -------------------------------------------------------------------------------------------


def test_errors():
    with pytest.raises(ValueError, match="two_stage"):
        DeformableDETR(two_stage=True, enc_layers=1, dec_layers=1)
    with pytest.raises(ValueError, match="num_feature_levels"):
        DeformableDETR(num_feature_levels=2)
    model = DeformableDETR(num_queries=5, enc_layers=1, dec_layers=1).eval()
    x = torch.randn(1, 3, 64, 64)
    mask = torch.ones(1, 64, 64, dtype=torch.long)
    mask[0, 10, 10] = 0  # a hole, not bottom/right padding
    with pytest.raises(ValueError, match="top-left rectangle"):
        model(x, mask)
    with pytest.raises(ValueError, match="pixel_mask"):
        model(x, mask[:, :32])
