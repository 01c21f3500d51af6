"""DeformableDETR against Hugging Face (single-/multi-scale, box refinement, two-stage; 4.x and 5.x key names),
through ``from_pretrained``, and Hugging Face's batch dependence under padding that ours does not have.

Architecture in these tests: the full ResNet-50 (frozen BN), but 2 encoder and 2 decoder layers, 30 queries,
7 classes and inputs of about 100x100 pixels, to keep each file well under a minute on a busy CPU. HF builds
its timm ResNet-50 offline (``use_pretrained_backbone=False`` is its default for the timm backbone).
"""
import pytest
import torch

from heads.deformable_detr import MSDeformAttn
from tasks.detection.model import DeformableDETR
from tests.utils import DETR_VARIANTS, PARITY_ATOL, padded_batch, perturb

transformers = pytest.importorskip("transformers")
pytest.importorskip("timm")  # Hugging Face's Deformable DETR builds its ResNet-50 with timm

SMALL = dict(encoder_layers=2, decoder_layers=2, num_queries=30, two_stage_num_proposals=30, num_labels=7)


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


@pytest.mark.parametrize("variant", list(DETR_VARIANTS))
def test_hf_folder_parity(tmp_path, variant):
    ref = _hf(tmp_path, **DETR_VARIANTS[variant])
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
            assert err <= PARITY_ATOL, f"{variant} {sampler} {tuple(x.shape)}: max abs diff {err:.3g}"


@pytest.mark.parametrize("variant", ["base", "box_refine"])
def test_hf_5x_in_memory_names(tmp_path, variant):
    ref = _hf(tmp_path, **DETR_VARIANTS[variant])
    state = ref.state_dict()
    assert "model.decoder.layers.0.self_attn.o_proj.weight" in state and "model.backbone.model.conv1.weight" in state
    torch.save(state, tmp_path / "v5.bin")  # config.json beside it describes the architecture
    ours = DeformableDETR.from_pretrained(tmp_path / "v5.bin")
    assert _max_err(ours, ref, torch.randn(1, 3, 96, 128)) <= PARITY_ATOL


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


def test_hf_is_not_batch_invariant_but_we_are(tmp_path):
    """Why the grouping exists: HF's shared padded backbone pass changes a padded image's outputs."""
    ref = _hf(tmp_path)
    ours = DeformableDETR.from_pretrained(tmp_path)
    images = [torch.randn(3, 96, 128), torch.randn(3, 70, 90)]
    batch, mask = padded_batch(images)
    with torch.no_grad():
        hf_alone = ref(pixel_values=images[1][None]).logits[0]
        hf_padded = ref(pixel_values=batch, pixel_mask=mask).logits[1]
        ours_padded = ours(batch, mask)["pred_logits"][1]
    assert (hf_alone - hf_padded).abs().max() > 1e-3
    assert (hf_alone - ours_padded).abs().max() <= PARITY_ATOL

