"""Bad input fails at the boundary with a ValueError/TypeError that names what is wrong."""
import pytest
import torch

from backbones import build_backbone, save_backbone_weights


@pytest.fixture(scope="module")
def b0():
    return build_backbone("pvt_v2_b0").eval()


@pytest.mark.parametrize(
    "x, error, match",
    [
        (torch.randn(3, 64, 64), ValueError, r"4-d tensor.*\(3, 64, 64\)"),
        (torch.randn(1, 1, 3, 64, 64), ValueError, "4-d tensor"),
        (torch.randn(1, 4, 64, 64), ValueError, "expects 3 input channels, got 4"),
        (torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8), TypeError, "floating-point.*uint8"),
        (torch.randn(1, 3, 31, 64), ValueError, r"H and W >= 32 px, got 31x64"),
        (torch.randn(1, 3, 64, 16), ValueError, r"got 64x16"),
        ([[1.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_images(b0, x, error, match):
    with pytest.raises(error, match=match):
        b0(x)


def test_resnet_checks_input_too():
    with pytest.raises(ValueError, match="expects 3 input channels"):
        build_backbone("resnet50")(torch.randn(1, 1, 64, 64))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(name="pvt_v2_b9"), ValueError, "unknown backbone 'pvt_v2_b9'.*pvt_v2_b0"),
        (dict(name="pvt_v2_b0", out_features=["stage5"]), ValueError, "unknown stage 'stage5'.*stage1, stage2"),
        (dict(name="pvt_v2_b0", out_features="stage4"), TypeError, "list or tuple of stage names"),
        (dict(name="pvt_v2_b0", out_indices=[4]), ValueError, r"index 4 is out of range.*0\.\.3"),
        (dict(name="pvt_v2_b0", out_indices=[-5]), ValueError, "out of range"),
        (dict(name="pvt_v2_b0", out_indices=[1.0]), TypeError, "ints"),
        (dict(name="pvt_v2_b0", out_indices=[1, 1]), ValueError, "duplicate"),
        (dict(name="pvt_v2_b0", out_indices=[3, 1]), ValueError, "stage order"),
        (dict(name="pvt_v2_b0", out_features=["stage2"], out_indices=[2]), ValueError, "same stages"),
        (dict(name="pvt_v2_b0", out_indices=[]), ValueError, "at least one stage"),
        (dict(name="pvt_v2_b0", hidden_size=64), TypeError, "unknown override.*hidden_size"),
        (dict(name="resnet50", depths=[1, 1, 1, 1]), TypeError, "unknown override.*depths"),
        (dict(name="pvt_v2_b0", depths=[2, 2, 2]), ValueError, "depths must be a sequence of 4"),
        (dict(name="pvt_v2_b0", hidden_act="mish"), ValueError, "hidden_act 'mish'"),
        (dict(name="pvt_v2_b0", num_attention_heads=[3, 2, 5, 8]), ValueError, "not a multiple"),
        (dict(name="pvt_v2_b0", frozen_stages=5), ValueError, "frozen_stages"),
        (dict(name=None), TypeError, "name must be a str"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    name = kwargs.pop("name")
    with pytest.raises(error, match=match):
        build_backbone(name, **kwargs)


def test_weights_of_another_variant(tmp_path):
    save_backbone_weights(build_backbone("pvt_v2_b2"), tmp_path / "b2.safetensors")
    with pytest.raises(ValueError) as info:
        build_backbone("pvt_v2_b0", weights=tmp_path / "b2.safetensors")
    msg = str(info.value)
    assert "b2.safetensors into pvt_v2_b0" in msg
    assert "unexpected keys: stage1.blocks.2." in msg  # b2 has 3 blocks in stage 1, b0 two
    assert "stage1.patch_embed.proj.weight: weights (64, 3, 7, 7) vs model (32, 3, 7, 7)" in msg
    assert "these weights fit pvt_v2_b2" in msg


def test_mit_weights_into_pvt_v2(tmp_path):
    save_backbone_weights(build_backbone("mit_b0"), tmp_path / "mit.pth")
    with pytest.raises(ValueError, match=r"(?s)mlp\.fc1\.weight: weights \(128, 32\) vs model \(256, 32\).*fit mit_b0"):
        build_backbone("pvt_v2_b0", weights=tmp_path / "mit.pth")


def test_not_a_backbone_file(tmp_path):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a PVTv2/MiT state dict.*fc.weight"):
        build_backbone("pvt_v2_b0", weights=tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a ResNet state dict"):
        build_backbone("resnet50", weights=tmp_path / "other.pth")
    save_backbone_weights(build_backbone("resnet50"), tmp_path / "r50.pth")
    with pytest.raises(ValueError, match="not a PVTv2/MiT"):
        build_backbone("pvt_v2_b0", weights=tmp_path / "r50.pth")


def test_unreadable_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_backbone("pvt_v2_b0", weights=tmp_path / "missing.pth")
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"unsupported weights file 'w.npz'"):
        build_backbone("pvt_v2_b0", weights=tmp_path / "w.npz")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="config.json is missing"):
        build_backbone("pvt_v2_b0", weights=tmp_path / "folder")
    (tmp_path / "folder" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="holds no weights"):
        build_backbone("pvt_v2_b0", weights=tmp_path / "folder")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        build_backbone("pvt_v2_b0", weights=tmp_path / "garbage.pth")
    with pytest.raises(TypeError, match="weights must be a path"):
        build_backbone("pvt_v2_b0", weights=123)


def test_corrupt_weight_files_name_the_file(tmp_path):
    (tmp_path / "random.safetensors").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"random.safetensors as safetensors"):
        build_backbone("pvt_v2_b0", weights=tmp_path / "random.safetensors")
    folder = tmp_path / "sharded"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors.index.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"model.safetensors.index.json is not a valid weights index"):
        build_backbone("pvt_v2_b0", weights=folder)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_one_dtype_rule(b0, dtype):
    with pytest.raises(TypeError, match=rf"the input is {dtype} but the weights are torch.float32"):
        b0(torch.randn(1, 3, 64, 64, dtype=dtype))
    assert b0.to(dtype)(torch.randn(1, 3, 64, 64, dtype=dtype))["stage4"].dtype == dtype  # converted together: fine
    b0.float()


def test_empty_batch(b0):
    with pytest.raises(ValueError, match="empty batch"):
        b0(torch.randn(0, 3, 64, 64))
