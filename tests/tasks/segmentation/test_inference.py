"""Inference at the original size: AlignedResize shapes, sliding windows and predict's augmentations.
``logits_to_labels`` against Hugging Face's post-processing is in test_inference_parity.py."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tasks.segmentation.inference import (
    aligned_resize,
    aligned_resize_shape,
    logits_to_labels,
    predict,
    slide_logits,
)
from tasks.segmentation.model import SegFormer

MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


class PixelModel(nn.Module):
    """Per-pixel logits at stride 1 (a 1x1 conv): translation- and flip-equivariant, so windows must
    reassemble the whole-image logits exactly."""

    def __init__(self, num_classes=5):
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2d(3, num_classes, 1)

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize(
    "hw, scale, expected",
    [
        ((683, 512), (2048, 512), (704, 512)),  # short side already 512: factor 1, 683 -> 704
        ((300, 400), (2048, 512), (512, 704)),  # factor 512/300: 400 -> int(682.67 + 0.5) = 683 -> 704
        ((400, 300), (512, 2048), (704, 512)),  # scale order does not matter: (long, short) edges
        ((100, 3000), (2048, 512), (96, 2048)),  # long edge caps: factor 2048/3000, 100 -> 68 -> 96
        ((2000, 3000), (2048, 512), (512, 768)),  # downscale by 512/2000
        ((300, 400), (1536, 384), (384, 512)),  # ratio 0.75 of (2048, 512): 400 * 1.28 = 512
    ],
)
def test_aligned_resize_shape(hw, scale, expected):
    assert aligned_resize_shape(*hw, scale=scale) == expected


def test_aligned_resize_rescales_then_aligns():
    image = np.random.randint(0, 256, (300, 400, 3), dtype=np.uint8)
    assert aligned_resize(image).shape == (512, 704, 3)
    assert aligned_resize_shape(300, 400, size_divisor=1) == (512, 683)


def test_slide_equals_whole_for_a_pixelwise_model():
    model = PixelModel().eval()
    image = torch.randn(2, 3, 70, 90)
    with torch.no_grad():
        whole = model(image)
        torch.testing.assert_close(slide_logits(model, image, 5, crop=(32, 48), stride=(20, 30)), whole)
        torch.testing.assert_close(slide_logits(model, image, None, crop=(128, 128), stride=(96, 96)), whole)


def test_slide_one_crop_equals_whole_segformer():
    model = SegFormer("mit_b0", num_classes=4).eval()
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        whole = F.interpolate(model(image), size=(64, 96), mode="bilinear", align_corners=False)
        torch.testing.assert_close(slide_logits(model, image, 4, crop=(64, 96), stride=(48, 64)), whole)
        with pytest.raises(ValueError, match="returns 4 classes, num_classes is 5"):
            slide_logits(model, image, 5, crop=(64, 96), stride=(48, 64))


def test_slide_averages_overlaps():
    """A model whose logits depend on the window position shows the canvas / count arithmetic."""
    calls = []

    def model(x):
        calls.append(x.shape[-2:])
        return torch.full((1, 1, *x.shape[-2:]), float(len(calls)))

    out = slide_logits(model, torch.zeros(1, 3, 10, 4), None, crop=(6, 4), stride=(4, 4))
    assert calls == [(6, 4), (6, 4)]  # windows at rows 0..5 and 4..9 (the second clamped to the border)
    expected = torch.tensor([1.0] * 4 + [1.5] * 2 + [2.0] * 4)
    torch.testing.assert_close(out[0, 0, :, 0], expected)


def test_predict_whole_matches_the_protocol_by_hand():
    model = SegFormer("mit_b0", num_classes=6).eval()
    image = np.random.randint(0, 256, (45, 70, 3), dtype=np.uint8)
    labels = predict(model, image, mean=MEAN, std=STD, scale=(256, 128))
    assert labels.shape == (45, 70) and labels.dtype == np.int64

    resized = aligned_resize(image, (256, 128))
    assert resized.shape == (128, 224, 3)  # 45x70 * 128/45 = 128x199 -> aligned 128x224
    x = torch.from_numpy(resized).permute(2, 0, 1)[None].float()
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = F.interpolate(model(x), size=(128, 224), mode="bilinear", align_corners=False)
    np.testing.assert_array_equal(labels, logits_to_labels(logits, (45, 70))[0].numpy())


def test_predict_flip_multiscale_and_slide():
    model = SegFormer("mit_b0", num_classes=3).train()
    image = np.random.randint(0, 256, (50, 40, 3), dtype=np.uint8)
    out = predict(model, image, mean=MEAN, std=STD, scale=(160, 96), ratios=(0.75, 1.0), flip=True)
    assert out.shape == (50, 40) and out.min() >= 0 and out.max() < 3
    assert model.training  # restored
    slide = predict(model, image, mean=MEAN, std=STD, scale=(160, 96), mode="slide", crop=(64, 64), stride=(48, 48))
    assert slide.shape == (50, 40)


def test_predict_flip_with_an_equivariant_model_changes_nothing():
    model = PixelModel()
    image = np.random.randint(0, 256, (33, 47, 3), dtype=np.uint8)
    plain = predict(model, image, mean=MEAN, std=STD, scale=(64, 32))
    np.testing.assert_array_equal(predict(model, image, mean=MEAN, std=STD, scale=(64, 32), flip=True), plain)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(image=np.zeros((8, 8, 3), np.float32)), TypeError, "uint8 RGB"),
        (dict(image=np.zeros((8, 8), np.uint8)), TypeError, "HxWx3"),
        (dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)), ValueError, "0-255 pixel units"),
        (dict(std=(1.0, 0.0, 1.0)), ValueError, "std > 0"),
        (dict(mode="sliding"), ValueError, "'whole' or 'slide'"),
        (dict(mode="slide"), ValueError, r"crop \(mode='slide'\) must be a pair"),
        (dict(crop=(64, 64)), ValueError, "only used with mode='slide'"),
        (dict(ratios=()), ValueError, "ratios"),
        (dict(scale=(512,)), ValueError, "scale must be a pair"),
    ],
)
def test_predict_errors(kwargs, error, match):
    args = {"image": np.zeros((40, 40, 3), np.uint8), "mean": MEAN, "std": STD, **kwargs}
    with pytest.raises(error, match=match):
        predict(PixelModel(), args.pop("image"), **args)
