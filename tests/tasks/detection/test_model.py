"""DeformableDETR: our checkpoint, batch invariance under padding, and loud errors. Hugging Face parity is in
test_model_parity.py.

Architecture in these tests: the full ResNet-50 (frozen BN), but 2 encoder and 2 decoder layers, 30 queries,
7 classes and inputs of about 100x100 pixels, to keep each file well under a minute on a busy CPU.
"""
import pytest
import torch

from tasks.detection.model import DeformableDETR
from tests.utils import DETR_VARIANTS, padded_batch, perturb


def test_our_checkpoint_round_trip(tmp_path):
    model = perturb(DeformableDETR(num_classes=5, num_queries=10, enc_layers=1, dec_layers=2, with_box_refine=True))
    torch.save({"model": model.state_dict(), "meta": {"task": "detection", "model": model.config}}, tmp_path / "c.pth")
    loaded = DeformableDETR.from_pretrained(tmp_path / "c.pth")
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    torch.testing.assert_close(a["pred_logits"], b["pred_logits"], atol=0, rtol=0)
    assert DeformableDETR(**model.config).config == model.config


# --- batch invariance ---------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["base", "two_stage"])
def test_batch_invariance(variant):
    cfg = {k: v for k, v in DETR_VARIANTS[variant].items()}
    model = perturb(DeformableDETR(num_classes=7, num_queries=30, enc_layers=2, dec_layers=2, **cfg))
    # Sizes that are not multiples of 32, and two images that share a size (one backbone pass for them).
    images = [torch.randn(3, 96, 128), torch.randn(3, 70, 90), torch.randn(3, 96, 128)]
    batch, mask = padded_batch(images)
    with torch.no_grad():
        together = model(batch, mask)
        for i, x in enumerate(images):
            alone = model(x[None])
            for key in ("pred_logits", "pred_boxes"):
                err = (together[key][i] - alone[key][0]).abs().max().item()
                assert err <= 1e-4, f"image {i} {key}: max abs diff {err:.3g}"
            aux = (together["aux_outputs"][0]["pred_boxes"][i] - alone["aux_outputs"][0]["pred_boxes"][0]).abs().max()
            assert aux <= 1e-4


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
