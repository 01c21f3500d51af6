"""The fused SegFormer head equals the straightforward all-MLP decoder: outputs (train and eval), gradients,
BatchNorm statistics; its parameters keep the reference layout; bad input fails loudly."""
import copy

import pytest
import torch
import torch.nn.functional as F

from heads.segformer_head import SegFormerHead
from tests.utils import perturb

CHANNELS = [32, 64, 160, 256]
SIZES = [(25, 37), (13, 19), (7, 10), (4, 5)]  # an odd, non-square 97x147 input's stage sizes


def reference_forward(head: SegFormerHead, features):
    """The paper's computation: project, upsample, concatenate [c4, c3, c2, c1], fuse, BN, ReLU, classify."""
    size = features[0].shape[-2:]
    projected = []
    for f, linear in zip(features, head.linear_c):
        b, _, h, w = f.shape
        z = linear(f.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, -1, h, w)
        projected.append(F.interpolate(z, size=size, mode="bilinear", align_corners=False))
    x = head.linear_fuse(torch.cat(projected[::-1], dim=1))
    x = head.dropout(F.relu(head.bn(x)))
    return head.classifier(x)


def _features(batch=2, channels_last=True, channels=CHANNELS, sizes=SIZES):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return [torch.randn(batch, c, *s).contiguous(memory_format=fmt) for c, s in zip(channels, sizes)]


@pytest.mark.parametrize("channels_last", [True, False])
def test_eval_output_equals_reference(channels_last):
    head = perturb(SegFormerHead(CHANNELS, num_classes=7, embed_dim=64))
    features = _features(channels_last=channels_last)
    with torch.no_grad():
        out = head(features)
        expected = reference_forward(head, features)
    assert out.shape == (2, 7, 25, 37)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_train_output_gradients_and_bn_statistics_equal_reference():
    fused = perturb(SegFormerHead(CHANNELS, num_classes=7, embed_dim=64, dropout=0.3)).train()
    plain = copy.deepcopy(fused)
    feats = _features()
    feats_fused = [f.clone().requires_grad_() for f in feats]
    feats_plain = [f.clone().requires_grad_() for f in feats]
    torch.manual_seed(1)  # the same Dropout2d mask for both: one draw of shape [B, D, 1, 1] each
    out = fused(feats_fused)
    torch.manual_seed(1)
    expected = reference_forward(plain, feats_plain)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)

    weight = torch.randn_like(out)
    (out * weight).sum().backward()
    (expected * weight).sum().backward()
    for (name, a), b in zip(fused.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-4, msg=lambda m: f"{name}: {m}")
    for a, b in zip(feats_fused, feats_plain):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(fused.bn, name), getattr(plain.bn, name), atol=1e-5, rtol=1e-5)


def test_eval_gradients_equal_reference():
    """With the BatchNorm folded into the composed weights, gradients still reach the real parameters."""
    fused = perturb(SegFormerHead(CHANNELS, num_classes=3, embed_dim=32))
    plain = copy.deepcopy(fused)
    feats = _features(batch=1)
    fused(feats).square().sum().backward()
    reference_forward(plain, feats).square().sum().backward()
    for (name, a), b in zip(fused.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def test_any_number_of_stages():
    channels, sizes = [16, 24], [(16, 12), (8, 6)]
    head = perturb(SegFormerHead(channels, num_classes=4, embed_dim=8))
    features = _features(channels=channels, sizes=sizes)
    with torch.no_grad():
        torch.testing.assert_close(head(features), reference_forward(head, features), atol=1e-5, rtol=1e-5)


def test_reference_parameter_layout():
    head = SegFormerHead(CHANNELS, num_classes=150, embed_dim=256)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes["linear_c.0.weight"] == (256, 32) and shapes["linear_c.3.weight"] == (256, 256)
    assert shapes["linear_fuse.weight"] == (256, 1024, 1, 1) and "linear_fuse.bias" not in shapes
    assert shapes["bn.running_var"] == (256,)
    assert shapes["classifier.weight"] == (150, 256, 1, 1) and shapes["classifier.bias"] == (150,)
    assert isinstance(head.dropout, torch.nn.Dropout2d)


@pytest.mark.parametrize(
    "features, error, match",
    [
        (torch.randn(1, 32, 8, 8), TypeError, "sequence of 4 feature maps"),
        (_features()[:3], ValueError, r"expects 4 feature maps .*got 3"),
        (_features()[:3] + [torch.randn(2, 128, 4, 5)], ValueError, r"feature 3 has shape \(2, 128, 4, 5\).*C=256"),
        (_features()[:3] + [torch.randn(1, 256, 4, 5)], ValueError, r"feature 3 has shape \(1, 256, 4, 5\).*B=2"),
        (_features()[:3] + [torch.randn(256, 4, 5)], ValueError, r"feature 3 must be a 4-d tensor"),
    ],
)
def test_bad_features(features, error, match):
    head = SegFormerHead(CHANNELS, num_classes=3, embed_dim=16)
    with pytest.raises(error, match=match):
        head(features)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(in_channels=[]), TypeError, "non-empty sequence"),
        (dict(in_channels=64), TypeError, "non-empty sequence"),
        (dict(in_channels=[32, 0]), ValueError, "in_channels must be a positive int, got 0"),
        (dict(num_classes=0), ValueError, "num_classes must be a positive int"),
        (dict(embed_dim=2.5), ValueError, "embed_dim"),
        (dict(dropout=1.0), ValueError, r"dropout must be in \[0, 1\)"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        SegFormerHead(**{"in_channels": CHANNELS, "num_classes": 3, **kwargs})
