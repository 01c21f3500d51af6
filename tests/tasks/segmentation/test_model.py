"""SegFormer: our checkpoint and mmseg checkpoints through ``from_pretrained``, the config round trip, loud
errors, and the training loss. Hugging Face parity is in test_model_parity.py."""
import re

import pytest
import torch
import torch.nn.functional as F

from tasks.segmentation.losses import segmentation_loss
from tasks.segmentation.model import SegFormer
from tests.utils import assert_same_logits, perturb


def _save_ours(path, state, config, task="segmentation"):
    """The checkpoint layout tools/train.py writes."""
    torch.save({"model": state, "meta": {"task": task, "model": config}}, path)


def test_our_checkpoint_round_trip(tmp_path):
    model = perturb(SegFormer("mit_b0", num_classes=4, class_names=["a", "b", "c", "d"]))
    _save_ours(tmp_path / "c.pth", model.state_dict(), model.config)
    loaded = SegFormer.from_pretrained(tmp_path / "c.pth", backbone_args={"grad_checkpointing": True})
    assert loaded.config == {**model.config, "backbone_args": {"grad_checkpointing": True}}
    assert loaded.class_names == ("a", "b", "c", "d")
    assert_same_logits(loaded, model, torch.randn(1, 3, 64, 96), atol=0.0)


def test_our_checkpoint_with_another_backbone_family(tmp_path):
    """The encoder keys go through the backbone's own converter, so any registered backbone loads."""
    model = perturb(SegFormer("resnet50", num_classes=3, decoder_dim=32))
    _save_ours(tmp_path / "r.pth", model.state_dict(), model.config)
    assert_same_logits(SegFormer.from_pretrained(tmp_path / "r.pth"), model, torch.randn(1, 3, 64, 64), atol=0.0)


def test_config_rebuilds_the_architecture():
    model = SegFormer("mit_b2", num_classes=3, backbone_args=dict(depths=(1, 1, 1, 1)))  # b2 widths, kept cheap
    assert model.config["decoder_dim"] == 768  # the default for b2-b5 sizes
    assert SegFormer("mit_b0", num_classes=3).config["decoder_dim"] == 256
    rebuilt = SegFormer(**model.config)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def _to_mmseg(state: dict) -> dict:
    """Our SegFormer keys -> the original mmseg checkpoint's (an inverse of the documented conversion)."""
    rules = [
        (r"^backbone\.stage(\d)\.patch_embed\.", r"backbone.patch_embed\1."),
        (r"^backbone\.stage(\d)\.blocks\.", r"backbone.block\1."),
        (r"^backbone\.stage(\d)\.norm\.", r"backbone.norm\1."),
        (r"\.mlp\.dwconv\.", ".mlp.dwconv.dwconv."),
        (r"^head\.linear_c\.(\d)\.", lambda m: f"decode_head.linear_c{int(m[1]) + 1}.proj."),
        (r"^head\.linear_fuse\.", "decode_head.linear_fuse.conv."),
        (r"^head\.bn\.", "decode_head.linear_fuse.bn."),
        (r"^head\.classifier\.", "decode_head.linear_pred."),
    ]
    out = {}
    for k, v in state.items():
        for pattern, repl in rules:
            k = re.sub(pattern, repl, k)
        out[k] = v
    return out


def test_mmseg_checkpoint(tmp_path):
    model = perturb(SegFormer("mit_b0", num_classes=5, decoder_dim=32))  # the original eps (1e-6 / 1e-5)
    state = _to_mmseg(model.state_dict())
    state["decode_head.conv_seg.weight"] = torch.zeros(5, 128, 1, 1)  # unused by SegFormer: dropped
    state["decode_head.conv_seg.bias"] = torch.zeros(5)
    classes = ("w", "x", "y", "z", "v")
    torch.save({"meta": {"CLASSES": classes}, "state_dict": state}, tmp_path / "segformer.b0.pth")
    loaded = SegFormer.from_pretrained(tmp_path / "segformer.b0.pth")
    assert (loaded.config["backbone"], loaded.config["decoder_dim"], loaded.num_classes) == ("mit_b0", 32, 5)
    assert loaded.class_names == classes
    assert_same_logits(loaded, model, torch.randn(1, 3, 97, 131), atol=0.0)


def test_forward_size_is_the_stride_4_stage():
    model = SegFormer("mit_b0", num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 97, 131)).shape == (2, 3, 25, 33)  # floor((n - 1) / 4) + 1


def test_mismatched_weights_name_keys_and_shapes(tmp_path):
    model = SegFormer("mit_b0", num_classes=4)
    config = dict(model.config, num_classes=6)
    _save_ours(tmp_path / "a.pth", model.state_dict(), config)
    with pytest.raises(ValueError, match=r"classifier\.weight: weights \(4, 256, 1, 1\) vs model \(6, 256, 1, 1\)"):
        SegFormer.from_pretrained(tmp_path / "a.pth")

    state = dict(model.state_dict(), **{"head.extra.weight": torch.zeros(1)})
    del state["head.linear_fuse.weight"]
    _save_ours(tmp_path / "b.pth", state, model.config)
    with pytest.raises(ValueError, match=r"(?s)missing keys: head\.linear_fuse\.weight.*unexpected keys: head\.extra"):
        SegFormer.from_pretrained(tmp_path / "b.pth")

    _save_ours(tmp_path / "depth.pth", model.state_dict(), {}, task="depth")
    with pytest.raises(ValueError, match="checkpoint for task 'depth'"):
        SegFormer.from_pretrained(tmp_path / "depth.pth")

    torch.save(model.state_dict(), tmp_path / "bare.pth")
    with pytest.raises(ValueError, match="bare state dict and no model configuration"):
        SegFormer.from_pretrained(tmp_path / "bare.pth")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(backbone_args={"out_indices": (3,)}), "may not set out_indices"),
        (dict(class_names=["a"]), "num_classes=3 names"),
        (dict(num_classes=0), "positive int"),
        (dict(backbone="mit_b9"), "unknown backbone 'mit_b9'"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SegFormer(**{"num_classes": 3, **kwargs})


# --- loss ------------------------------------------------------------------------------------------


def test_loss_upsamples_and_ignores():
    logits = torch.randn(2, 4, 5, 6, requires_grad=True)
    target = torch.randint(0, 4, (2, 20, 24))
    target[0, :10] = 255
    loss = segmentation_loss(logits, target)["loss_ce"]
    up = F.interpolate(logits, size=(20, 24), mode="bilinear", align_corners=False)
    torch.testing.assert_close(loss, F.cross_entropy(up, target, ignore_index=255))
    loss.backward()
    assert torch.isfinite(logits.grad).all()

    same_size = torch.randint(0, 4, (2, 5, 6))
    torch.testing.assert_close(segmentation_loss(logits, same_size)["loss_ce"], F.cross_entropy(logits, same_size))


def test_loss_all_ignored_is_zero_not_nan():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((1, 16, 16), 7), ignore_index=7)["loss_ce"]
    assert loss.item() == 0.0
    loss.backward()
    assert (logits.grad == 0).all()


@pytest.mark.parametrize(
    "logits, target, error, match",
    [
        (torch.randn(1, 3, 4, 4), torch.zeros(1, 8, 8), TypeError, "int64"),
        (torch.randn(1, 3, 4, 4), torch.zeros(1, 8, 8, dtype=torch.uint8), TypeError, "int64"),
        (torch.randn(3, 4, 4), torch.zeros(1, 8, 8, dtype=torch.long), TypeError, r"Tensor\[B, K, h, w\]"),
        (torch.randn(2, 3, 4, 4), torch.zeros(1, 8, 8, dtype=torch.long), ValueError, "B=2"),
        (torch.randn(1, 3, 4, 4), torch.zeros(1, 1, 8, 8, dtype=torch.long), ValueError, r"\[B, H, W\]"),
        (torch.randn(1, 3, 4, 4), torch.full((1, 8, 8), 3), ValueError, r"labels \[3\] are outside 0\.\.2"),
    ],
)
def test_loss_errors(logits, target, error, match):
    with pytest.raises(error, match=match):
        segmentation_loss(logits, target)
