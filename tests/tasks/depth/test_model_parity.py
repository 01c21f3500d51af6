"""GLPN against Hugging Face: ``from_pretrained`` on folders and bare weights, the layer-norm eps override, the
b4 config, the errors for Hugging Face folders of other models, and the SiLog loss."""
import pytest
import torch

from tasks.depth.losses import silog_loss
from tasks.depth.model import GLPN
from tests.utils import assert_same_depth, perturb

transformers = pytest.importorskip("transformers")

# b4 widths with one block per stage, to keep the test fast (the real b4 has depths 3, 8, 27, 3).
B4_WIDTHS = dict(hidden_sizes=[64, 128, 320, 512], depths=[1, 1, 1, 1])


def _hf(tmp_path, **config):
    ref = perturb(transformers.GLPNForDepthEstimation(transformers.GLPNConfig(**config)))
    ref.save_pretrained(tmp_path)
    return ref


@pytest.mark.parametrize("config", [dict(), dict(B4_WIDTHS, max_depth=80)], ids=["b0", "b4-widths"])
def test_hf_folder_parity(tmp_path, config):
    ref = _hf(tmp_path, **config)
    ours = GLPN.from_pretrained(tmp_path)
    assert not ours.training
    assert list(ours.backbone.feature_channels.values()) == list(ref.config.hidden_sizes)
    assert ours.config["decoder_dim"] == 64
    assert ours.max_depth == ref.config.max_depth
    # 94x126: Hugging Face returns 96x128 (it accepts sizes whose stages halve exactly); ours is that, cropped.
    for shape in [(1, 3, 96, 128), (2, 3, 64, 96), (1, 3, 94, 126)]:
        assert_same_depth(ours, ref, torch.rand(shape))


def test_bare_weights_with_config_beside(tmp_path):
    ref = _hf(tmp_path, **B4_WIDTHS)
    # transformers 5.x holds GLPN under the same key names it writes (and 4.x wrote): nothing to rename.
    assert "decoder.stages.0.convolution.weight" in ref.state_dict() and "head.head.0.weight" in ref.state_dict()
    torch.save(ref.state_dict(), tmp_path / "weights.bin")
    assert_same_depth(GLPN.from_pretrained(tmp_path / "weights.bin"), ref, torch.rand(1, 3, 64, 96))


def test_eps_override(tmp_path):
    _hf(tmp_path)
    model = GLPN.from_pretrained(tmp_path, backbone_args={"layer_norm_eps": 1e-6})  # the eps GLPDepth trained the MiT with
    assert model.config["backbone_args"]["layer_norm_eps"] == 1e-6
    assert model.backbone.stage1.norm.eps == 1e-6 and model.backbone.stage1.patch_embed.norm.eps == 1e-5


def test_hf_b4_config_is_mit_b4(tmp_path):
    config = transformers.GLPNConfig(hidden_sizes=[64, 128, 320, 512], depths=[3, 8, 27, 3])  # vinvino02/glpn-nyu
    (tmp_path / "config.json").write_text(config.to_json_string())
    from tasks.common.pretrained import read_config
    from tasks.depth.weights import WEIGHTS

    assert read_config(tmp_path / "config.json", WEIGHTS) == dict(
        backbone="mit_b4", max_depth=10.0, decoder_dim=64,
        backbone_args=dict(drop_path_rate=0.1, layer_norm_eps=1e-5, embed_layer_norm_eps=1e-5),
    )


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        GLPN.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="config.json is missing"):
        GLPN.from_pretrained(tmp_path / "empty")

    seg = tmp_path / "seg"
    transformers.SegformerForSemanticSegmentation(transformers.SegformerConfig(num_labels=3)).save_pretrained(seg)
    with pytest.raises(ValueError, match="describes a 'segformer' model"):
        GLPN.from_pretrained(seg)

    encoder = tmp_path / "encoder"
    transformers.GLPNModel(transformers.GLPNConfig()).save_pretrained(encoder)
    with pytest.raises(ValueError, match="GLPNModel without a depth head"):
        GLPN.from_pretrained(encoder)

    other_head = tmp_path / "head_in_index"
    _hf(other_head, head_in_index=1)
    with pytest.raises(ValueError, match="head_in_index=1 is not supported"):
        GLPN.from_pretrained(other_head)


def test_silog_matches_hugging_face():
    pred = torch.rand(2, 1, 8, 12) * 10 + 0.1
    target = torch.rand(2, 1, 8, 12) * 10
    target[target < 2] = 0
    reference = transformers.models.glpn.modeling_glpn.SiLogLoss()(pred[:, 0], target[:, 0])
    torch.testing.assert_close(silog_loss(pred, target)["loss_silog"], reference)

