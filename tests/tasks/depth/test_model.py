"""GLPN: our checkpoint and the original GLPDepth checkpoint through ``from_pretrained``, the config round trip,
loud errors, and the SiLog loss. Hugging Face parity is in test_model_parity.py."""
import json
import math
import re

import pytest
import torch

from tasks.depth.losses import silog_loss
from tasks.depth.model import GLPN
from tests.utils import assert_same_depth, perturb


def test_sizes_hugging_face_rejects_work():
    model = GLPN("mit_b0", max_depth=10.0).eval()
    with torch.no_grad():
        depth = model(torch.rand(1, 3, 100, 130))  # stages 25x33, 13x17, 7x9, 4x5
    assert depth.shape == (1, 1, 100, 130) and (depth > 0).all() and (depth < 10).all()


def _save_ours(path, state, config, task="depth"):
    """The checkpoint layout tools/train.py writes."""
    torch.save({"model": state, "meta": {"task": task, "model": config}}, path)


def test_our_checkpoint_round_trip(tmp_path):
    model = perturb(GLPN("mit_b0", max_depth=80.0, decoder_dim=32))
    _save_ours(tmp_path / "c.pth", model.state_dict(), model.config)
    loaded = GLPN.from_pretrained(tmp_path / "c.pth", backbone_args={"grad_checkpointing": True})
    assert loaded.config == {**model.config, "backbone_args": {"grad_checkpointing": True}}
    assert loaded.max_depth == 80.0
    assert_same_depth(loaded, model, torch.rand(1, 3, 64, 96))


def test_our_config_json_beside_weights(tmp_path):
    model = perturb(GLPN("pvt_v2_b0"))  # another backbone family: the encoder goes through its own converter
    torch.save(model.state_dict(), tmp_path / "w.pth")
    (tmp_path / "config.json").write_text(json.dumps({"task": "depth", "model": model.config}))
    assert_same_depth(GLPN.from_pretrained(tmp_path / "w.pth"), model, torch.rand(1, 3, 64, 64))


def test_config_rebuilds_the_architecture():
    model = GLPN("mit_b4", backbone_args=dict(depths=(1, 1, 1, 1)))
    expected = dict(backbone="mit_b4", max_depth=10.0, decoder_dim=64, backbone_args={"depths": (1, 1, 1, 1)},
                    preprocessing=GLPN.default_preprocessing.to_dict())
    assert model.config == expected
    rebuilt = GLPN(**model.config)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def _to_glpdepth(state: dict) -> dict:
    """Our GLPN keys -> the original GLPDepth checkpoint's (DataParallel ``module.`` prefix)."""
    rules = [
        (r"^backbone\.stage(\d)\.patch_embed\.", r"module.encoder.patch_embed\1."),
        (r"^backbone\.stage(\d)\.blocks\.", r"module.encoder.block\1."),
        (r"^backbone\.stage(\d)\.norm\.", r"module.encoder.norm\1."),
        (r"\.mlp\.dwconv\.", ".mlp.dwconv.dwconv."),
        (r"^head\.stages\.0\.convolution\.", "module.decoder.bot_conv."),
        (r"^head\.stages\.(\d)\.convolution\.", r"module.decoder.skip_conv\1."),
        (r"^head\.stages\.(\d)\.fusion\.convolutional_layer(\d)\.", r"module.decoder.fusion\1.conv\2."),
        (r"^head\.depth\.", "module.last_layer_depth."),
    ]
    out = {}
    for k, v in state.items():
        for pattern, repl in rules:
            k = re.sub(pattern, repl, k)
        out[k] = v
    return out


def test_glpdepth_checkpoint(tmp_path):
    # decoder_dim 32 = c1's channels, so stage 3 has no 1x1 conv, as in GLPDepth (which has none there)
    model = perturb(GLPN("mit_b0", decoder_dim=32))
    state = _to_glpdepth(model.state_dict())
    assert "module.decoder.fusion3.conv1.0.weight" in state and "module.decoder.fusion1.conv3.weight" in state
    torch.save(state, tmp_path / "best_model_nyu.ckpt")
    loaded = GLPN.from_pretrained(tmp_path / "best_model_nyu.ckpt")
    assert (loaded.config["backbone"], loaded.config["decoder_dim"], loaded.max_depth) == ("mit_b0", 32, 10.0)
    assert_same_depth(loaded, model, torch.rand(1, 3, 64, 96))
    kitti = GLPN.from_pretrained(tmp_path / "best_model_nyu.ckpt", max_depth=80.0)  # not stored in the file
    assert kitti.max_depth == 80.0 and kitti.config["max_depth"] == 80.0


def test_mismatched_weights_name_keys_and_shapes(tmp_path):
    model = GLPN("mit_b0")
    _save_ours(tmp_path / "a.pth", model.state_dict(), dict(model.config, decoder_dim=32))
    shapes = r"stages\.0\.convolution\.weight: weights \(64, 256, 1, 1\) vs model \(32, 256, 1, 1\)"
    with pytest.raises(ValueError, match=shapes):
        GLPN.from_pretrained(tmp_path / "a.pth")

    state = dict(model.state_dict(), **{"head.extra.weight": torch.zeros(1)})
    del state["head.depth.2.weight"]
    _save_ours(tmp_path / "b.pth", state, model.config)
    with pytest.raises(ValueError, match=r"(?s)missing keys: head\.depth\.2\.weight.*unexpected keys: head\.extra"):
        GLPN.from_pretrained(tmp_path / "b.pth")

    _save_ours(tmp_path / "seg.pth", model.state_dict(), {}, task="segmentation")
    with pytest.raises(ValueError, match="checkpoint for task 'segmentation'"):
        GLPN.from_pretrained(tmp_path / "seg.pth")

    torch.save(model.state_dict(), tmp_path / "bare.pth")
    with pytest.raises(ValueError, match="bare state dict and no model configuration"):
        GLPN.from_pretrained(tmp_path / "bare.pth")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(backbone_args={"out_indices": (3,)}), ValueError, "may not set out_indices"),
        (dict(max_depth=-1.0), ValueError, "max_depth must be a positive number"),
        (dict(decoder_dim=0), ValueError, "decoder_dim must be a positive int"),
        (dict(backbone="mit_b9"), ValueError, "unknown backbone 'mit_b9'"),
        (dict(backbone=None), TypeError, "registered backbone name"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        GLPN(**{"backbone": "mit_b0", **kwargs})


# --- loss ------------------------------------------------------------------------------------------


def test_silog_by_hand():
    pred = torch.tensor([[[[1.0, 2.0], [4.0, 1.0]]]], requires_grad=True)
    target = torch.tensor([[[[2.0, 2.0], [1.0, 0.0]]]])  # the last pixel has no measurement
    d = [math.log(2.0), 0.0, math.log(0.25)]  # log(target) - log(pred) on the three valid pixels
    mean, mean_sq = sum(d) / 3, sum(x * x for x in d) / 3
    expected = math.sqrt(mean_sq - 0.5 * mean**2)
    loss = silog_loss(pred, target)["loss_silog"]
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert pred.grad[0, 0, 1, 1] == 0 and torch.isfinite(pred.grad).all()

    # [B, H, W] works too, and lambd is the weight of the squared mean
    flat = silog_loss(pred.detach()[:, 0], target[:, 0], lambd=0.0)["loss_silog"]
    assert flat.item() == pytest.approx(math.sqrt(mean_sq), rel=1e-6)


def test_silog_all_invalid_is_zero_with_a_gradient():
    pred = torch.rand(2, 1, 4, 4, requires_grad=True)
    loss = silog_loss(pred, torch.zeros(2, 1, 4, 4))["loss_silog"]
    assert loss.item() == 0.0
    loss.backward()
    assert (pred.grad == 0).all()


def test_silog_zero_prediction_is_finite():
    """fp16 sigmoids underflow to 0: the clamp keeps log(pred) finite instead of -inf (loss NaN)."""
    pred = torch.tensor([[[0.0, 1.0]]], requires_grad=True)
    loss = silog_loss(pred, torch.tensor([[[1.0, 2.0]]]))["loss_silog"]
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize(
    "pred, target, error, match",
    [
        (torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 5), ValueError, "same batch and H, W"),
        (torch.rand(2, 1, 4, 4), torch.rand(1, 4, 4), ValueError, "same batch and H, W"),
        (torch.rand(1, 2, 4, 4), torch.rand(1, 2, 4, 4), ValueError, "one channel"),
        (torch.rand(4, 4), torch.rand(4, 4), TypeError, r"pred must be a floating-point Tensor\[B, 1, H, W\]"),
        (torch.rand(1, 4, 4), torch.ones(1, 4, 4, dtype=torch.long), TypeError, "target must be a floating-point"),
        (torch.rand(1, 4, 4), torch.rand(1, 4, 4), ValueError, "lambd"),
    ],
)
def test_silog_errors(pred, target, error, match):
    kwargs = {"lambd": 1.5} if match == "lambd" else {}
    with pytest.raises(error, match=match):
        silog_loss(pred, target, **kwargs)
