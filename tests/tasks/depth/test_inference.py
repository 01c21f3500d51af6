"""predict_depth with a tiny stand-in for GLPN (the contract: [B, 3, H, W] in 0..1 -> [B, 1, H, W] metres),
and save_depth_png."""
import numpy as np
import pytest
import torch
from PIL import Image

from tasks.depth.inference import predict_depth
from tasks.depth.visualize import save_depth_png


class StandIn(torch.nn.Module):
    """Depth = 1 + 2·red + a left-to-right ramp (so a flip changes the answer); insists on sizes that are
    multiples of 32, like a stride-32 encoder/decoder, and records what it was given."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(2.0))
        self.inputs = []

    def forward(self, x):
        assert x.shape[-2] % 32 == 0 and x.shape[-1] % 32 == 0, x.shape
        assert not self.training and 0 <= float(x.min()) and float(x.max()) <= 1
        self.inputs.append(x.clone())
        ramp = torch.linspace(0, 1, x.shape[-1]).expand(x.shape[0], 1, *x.shape[-2:])
        return 1 + self.scale * x[:, :1] + ramp


def test_prediction_at_the_image_size():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    model = StandIn()
    depth = predict_depth(model, image)
    assert depth.shape == (64, 96) and depth.dtype == np.float32
    expected = 1 + 2 * image[..., 0].astype(np.float64) / 255 + np.linspace(0, 1, 96)[None]
    np.testing.assert_allclose(depth, expected, rtol=1e-6)
    assert model.training  # restored


def test_flip_averages_with_the_unflipped_prediction_of_the_flipped_image():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)
    model = StandIn()
    plain = predict_depth(model, image)
    flipped_input = predict_depth(model, np.ascontiguousarray(image[:, ::-1]))
    both = predict_depth(model, image, flip=True)
    np.testing.assert_allclose(both, 0.5 * (plain + flipped_input[:, ::-1]), rtol=1e-6)
    # for this model: 1 + 2·red + (ramp + reversed ramp) / 2 = 1 + 2·red + 0.5
    np.testing.assert_allclose(both, 1 + 2 * image[..., 0].astype(np.float64) / 255 + 0.5, rtol=1e-6)


def test_sizes_off_the_grid_are_padded_by_replication_and_cropped_back():
    image = np.random.default_rng(2).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    model = StandIn()
    depth = predict_depth(model, image)
    assert depth.shape == (50, 70)
    seen = model.inputs[-1]
    assert tuple(seen.shape) == (1, 3, 64, 96)
    torch.testing.assert_close(seen[0, :, 50:, :70], seen[0, :, 49:50, :70].expand(3, 14, 70))  # edge rows
    np.testing.assert_allclose(depth, 1 + 2 * image[..., 0].astype(np.float64) / 255 + np.linspace(0, 1, 96)[None, :70], rtol=1e-6)


def test_bad_image_and_bad_model_output():
    with pytest.raises(TypeError, match=r"uint8 \[H, W, 3\]"):
        predict_depth(StandIn(), np.zeros((32, 32, 3), np.float32))
    with pytest.raises(TypeError, match=r"uint8 \[H, W, 3\]"):
        predict_depth(StandIn(), np.zeros((32, 32), np.uint8))

    class Quarter(torch.nn.Module):
        def forward(self, x):
            return x[:, :1, ::4, ::4]

    with pytest.raises(ValueError, match=r"Tensor\[B, 1, H, W\] = \(1, 1, 32, 32\).*got \(1, 1, 8, 8\)"):
        predict_depth(Quarter(), np.zeros((32, 32, 3), np.uint8))


def test_save_depth_png_writes_a_picture(tmp_path):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    depth = np.tile(np.linspace(0.5, 9.5, 64, dtype=np.float32), (48, 1))
    depth[:5, :5] = 0  # no measurement
    depth[10, 10] = np.nan
    for max_depth in (None, 10.0):
        path = tmp_path / f"depth_{max_depth}.png"
        save_depth_png(path, image, depth, max_depth=max_depth)
        with Image.open(path) as picture:
            assert picture.format == "PNG" and picture.width > picture.height > 100
    with pytest.raises(ValueError, match="must be"):
        save_depth_png(tmp_path / "bad.png", image, depth[:10])
