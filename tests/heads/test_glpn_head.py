"""The GLPN head equals the straightforward decoder (module by module, BN unfolded): outputs in train and eval,
gradients, BN statistics; sizes that are not multiples of 32 are cropped; the parameters keep Hugging Face's
layout; bad input fails loudly."""
import copy

import pytest
import torch
import torch.nn.functional as F

from heads.glpn_head import GLPNHead
from tests.utils import perturb

CHANNELS = [32, 64, 160, 256]  # b0: c1 has 32 != 64 channels, so stage 3 has a 1x1 conv
SIZES = [(24, 32), (12, 16), (6, 8), (3, 4)]  # a 96x128 input's stage sizes


def reference_forward(head: GLPNHead, features, crop=False):
    """The paper's computation as Hugging Face runs it (sizes that halve exactly); ``crop``: each upsampled
    map is cut to the next skip feature's size first."""
    x = None
    for stage, f in zip(head.stages, features[::-1]):
        local = stage.convolution(f)
        if x is not None:
            if crop:
                x = x[..., : local.shape[-2], : local.shape[-1]]
            s = stage.fusion
            a = torch.cat([local, x], dim=1)
            a = s.convolutional_layer3(s.convolutional_layer2(s.convolutional_layer1(a))).sigmoid()
            x = local * a[:, 0:1] + x * a[:, 1:2]
        else:
            x = local
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    return torch.sigmoid(head.depth(x)) * head.max_depth


def _assert_grads_close(ours, plain, rel=1e-5):
    """Gradients agree up to ``rel`` times each tensor's largest gradient, or 1e-4 (fp32 sums in another order)."""
    for (name, a), b in zip(ours.named_parameters(), plain.parameters()):
        atol = max(1e-4, rel * b.grad.abs().max().item())  # floor: conv biases before BN get ~0 in train mode
        torch.testing.assert_close(a.grad, b.grad, atol=atol, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def _features(batch=2, channels_last=True, channels=CHANNELS, sizes=SIZES):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return [torch.randn(batch, c, *s).contiguous(memory_format=fmt) for c, s in zip(channels, sizes)]


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("channels", [CHANNELS, [64, 128, 320, 512]], ids=["b0", "b4"])
def test_eval_output_equals_reference(channels_last, channels):
    head = perturb(GLPNHead(channels, decoder_dim=64, max_depth=10.0))
    features = _features(channels_last=channels_last, channels=channels)
    with torch.no_grad():
        out = head(features)
        expected = reference_forward(head, features)
    assert out.shape == (2, 1, 96, 128)
    assert (out > 0).all() and (out < 10).all()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_train_output_gradients_and_bn_statistics_equal_reference():
    ours = perturb(GLPNHead(CHANNELS, decoder_dim=16, max_depth=80.0)).train()
    plain = copy.deepcopy(ours)
    feats = _features()
    torch.testing.assert_close(ours(feats), reference_forward(plain, feats), atol=1e-4, rtol=1e-5)
    for (name, a), b in zip(ours.named_buffers(), plain.buffers()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=lambda m: f"{name}: {m}")

    # Gradients in fp64. A convolution bias right before a train-mode BatchNorm has a zero gradient (the
    # BatchNorm removes the mean), so what fp32 computes for it is the rounding noise of a sum over
    # B x H x W upstream gradients, and its size depends on the order of that sum: up to 1.2e-4 with one
    # thread (pytest-xdist's workers), below 1e-4 with two. In fp64 that noise is ~1e-12 and every gradient,
    # the zero ones included, is held to _assert_grads_close's bounds with orders of margin.
    ours, plain = ours.double(), plain.double()
    feats_ours = [f.double().requires_grad_() for f in feats]
    feats_plain = [f.double().requires_grad_() for f in feats]
    out = ours(feats_ours)
    expected = reference_forward(plain, feats_plain)
    weight = torch.randn_like(out)
    (out * weight).sum().backward()
    (expected * weight).sum().backward()
    _assert_grads_close(ours, plain)
    for a, b in zip(feats_ours, feats_plain):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4)


def test_eval_gradients_equal_reference():
    """With the BatchNorms folded into the convolutions, gradients still reach the real parameters."""
    ours = perturb(GLPNHead(CHANNELS, decoder_dim=16))
    plain = copy.deepcopy(ours)
    feats = _features(batch=1)
    ours(feats).square().sum().backward()
    reference_forward(plain, feats).square().sum().backward()
    _assert_grads_close(ours, plain)


def test_sizes_that_do_not_halve_exactly_are_cropped():
    """A 97x131 input's stages are 25x33, 13x17, 7x9, 4x5: each x2 upsampling is cropped to the skip's size
    (dropping the last row/column keeps the pixel grid of the exact case) and the output to ``size``."""
    head = perturb(GLPNHead(CHANNELS, decoder_dim=16))
    features = _features(batch=1, sizes=[(25, 33), (13, 17), (7, 9), (4, 5)])
    with torch.no_grad():
        full = head(features)
        cropped = head(features, size=(97, 131))
        expected = reference_forward(head, features, crop=True)
    assert full.shape == (1, 1, 100, 132) and cropped.shape == (1, 1, 97, 131)
    torch.testing.assert_close(full, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cropped, full[..., :97, :131], atol=0, rtol=0)


def test_reference_parameter_layout():
    head = GLPNHead(CHANNELS, decoder_dim=64)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes["stages.0.convolution.weight"] == (64, 256, 1, 1)  # the deepest stage first
    assert shapes["stages.3.convolution.weight"] == (64, 32, 1, 1)
    assert not any(k.startswith("stages.0.fusion") for k in shapes)
    assert shapes["stages.1.fusion.convolutional_layer1.0.weight"] == (64, 128, 3, 3)
    assert shapes["stages.1.fusion.convolutional_layer1.1.running_var"] == (64,)
    assert shapes["stages.2.fusion.convolutional_layer2.0.weight"] == (32, 64, 3, 3)
    assert shapes["stages.3.fusion.convolutional_layer3.weight"] == (2, 32, 3, 3)
    assert shapes["depth.0.weight"] == (64, 64, 3, 3) and shapes["depth.2.weight"] == (1, 64, 3, 3)
    b4 = GLPNHead([64, 128, 320, 512]).state_dict()
    assert not any(k.startswith("stages.3.convolution") for k in b4)  # c1 used as is (Identity)


@pytest.mark.parametrize(
    "features, size, error, match",
    [
        (torch.randn(1, 32, 8, 8), None, TypeError, "sequence of 4 feature maps"),
        (_features()[:3], None, ValueError, r"expects 4 feature maps .*got 3"),
        (_features()[:3] + [torch.randn(2, 128, 3, 4)], None, ValueError,
         r"feature 3 has shape \(2, 128, 3, 4\).*C=256"),
        (_features()[:3] + [torch.randn(1, 256, 3, 4)], None, ValueError, r"feature 3 has shape \(1, 256, 3, 4\).*B=2"),
        (_features()[:3] + [torch.randn(256, 3, 4)], None, ValueError, r"feature 3 must be a 4-d tensor"),
        (_features()[:3] + [torch.randn(2, 256, 2, 4)], None, ValueError, r"feature 3 is 2x4 but feature 2 is 6x8"),
        (_features(), (97, 128), ValueError, r"at most the output size \(96, 128\)"),
    ],
)
def test_bad_features(features, size, error, match):
    head = GLPNHead(CHANNELS, decoder_dim=16)
    with pytest.raises(error, match=match):
        head(features, size)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(in_channels=[]), TypeError, "non-empty sequence"),
        (dict(in_channels=64), TypeError, "non-empty sequence"),
        (dict(in_channels=[32, 0]), ValueError, "in_channels must be a positive int, got 0"),
        (dict(decoder_dim=2.5), ValueError, "decoder_dim must be a positive int"),
        (dict(decoder_dim=1), ValueError, "at least 2"),
        (dict(max_depth=0), ValueError, "max_depth must be a positive number"),
        (dict(max_depth="10"), ValueError, "max_depth must be a positive number"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        GLPNHead(**{"in_channels": CHANNELS, **kwargs})
