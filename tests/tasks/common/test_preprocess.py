"""Preprocessing: the resize rules, normalisation, the dict round trip and bad values."""
import numpy as np
import pytest
import torch

from tasks.common.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing


@pytest.mark.parametrize(
    "rule, size, divisor, hw, expected",
    [
        ("none", (), 1, (37, 53), (37, 53)),
        ("none", (), 32, (37, 53), (64, 64)),
        ("keep_ratio", (2048, 512), 1, (480, 640), (512, 683)),  # short side limits: 512 / 480
        ("keep_ratio", (2048, 512), 1, (100, 1000), (205, 2048)),  # long side limits: 2048 / 1000
        ("keep_ratio", (2048, 512), 32, (480, 640), (512, 704)),
        ("short_side", (800, 1333), 1, (480, 640), (800, 1066)),
        ("short_side", (800, 1333), 1, (300, 1000), (400, 1333)),  # DETR: the long side caps the scale
        ("short_side_crop", (256, 224), 1, (300, 400), (256, 341)),  # torchvision truncates the long side
        ("fixed", (224, 320), 1, (300, 400), (224, 320)),
    ],
)
def test_output_size(rule, size, divisor, hw, expected):
    assert Preprocessing(resize=rule, size=size, size_divisor=divisor).output_size(*hw) == expected


def test_call_normalises_and_crops():
    image = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    x = Preprocessing(resize="short_side_crop", size=(256, 224), interpolation="bicubic")(image)
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    same = Preprocessing(mean=(0, 0, 0), std=(1, 1, 1))(image)
    assert torch.equal(same[0].permute(1, 2, 0), torch.from_numpy(image).float() / 255)
    plain = Preprocessing()(image)  # ImageNet mean/std, no resize
    expected = (torch.from_numpy(image).float() / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(plain[0].permute(1, 2, 0), expected)


def test_dict_round_trip():
    p = Preprocessing(resize="keep_ratio", size=(2048, 512), size_divisor=32)
    assert Preprocessing.from_dict(p.to_dict()) == p
    assert Preprocessing.from_dict(p) is p


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mean=(123.675, 116.28, 103.53)), "0-1 units"),
        (dict(std=(0.2, 0.2)), "3 numbers"),
        (dict(resize="stretch"), "resize must be one of"),
        (dict(resize="keep_ratio", size=(512,)), "2 positive ints"),
        (dict(size_divisor=0), "size_divisor"),
        (dict(interpolation="lanczos"), "interpolation"),
    ],
)
def test_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Preprocessing(**kwargs)


def test_bad_image_and_keys():
    with pytest.raises(TypeError, match="HxWx3 uint8 RGB"):
        Preprocessing()(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="unknown keys crop"):
        Preprocessing.from_dict({"crop": 3})
