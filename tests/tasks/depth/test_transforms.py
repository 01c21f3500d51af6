"""The GLPN training steps: geometry moves image and depth together, randomness comes from sample['rng'],
the photometric steps do what their docstrings say, CutDepth's rate and widths, ToTensor's ranges."""
import cv2
import numpy as np
import pytest
import torch

from tasks.depth import transforms as T


def coordinate_sample(height=48, width=64, seed=0) -> dict:
    """Image and depth that both encode each pixel's (row, column), so any misalignment shows."""
    rows, cols = np.mgrid[0:height, 0:width]
    image = np.stack([rows, cols, (rows + cols) % 256], axis=-1).astype(np.uint8)
    depth = (rows * 1000 + cols).astype(np.float32)
    return {"image": image, "depth": depth, "rng": np.random.default_rng(seed)}


def assert_aligned(sample: dict) -> None:
    image, depth = sample["image"], sample["depth"]
    np.testing.assert_array_equal(depth, image[..., 0].astype(np.float32) * 1000 + image[..., 1])


def test_random_crop_shape_and_alignment():
    offsets = set()
    for seed in range(30):
        out = T.RandomCrop(32, 40)(coordinate_sample(seed=seed))
        assert out["image"].shape == (32, 40, 3) and out["depth"].shape == (32, 40)
        assert_aligned(out)
        top, left = out["image"][0, 0, :2]
        assert 0 <= top <= 48 - 32 and 0 <= left <= 64 - 40
        offsets.add((int(top), int(left)))
    assert len(offsets) > 20  # the window moves
    whole = T.RandomCrop(48, 64)(coordinate_sample())  # exactly the image size: the whole image
    assert whole["image"][0, 0, :2].tolist() == [0, 0] and whole["image"].shape == (48, 64, 3)


def test_random_crop_refuses_small_images():
    with pytest.raises(ValueError, match="only 48x64; use a smaller crop"):
        T.RandomCrop(448, 576)(coordinate_sample())


def test_flip_moves_image_and_depth_together():
    flipped = 0
    for seed in range(40):
        sample = coordinate_sample(seed=seed)
        original = sample["image"].copy()
        out = T.RandomHorizontalFlip(0.5, keys={"depth": "hw"})(sample)
        assert_aligned(out)
        if out["image"][0, 0, 1] == 63:
            flipped += 1
            np.testing.assert_array_equal(out["image"], original[:, ::-1])
        else:
            np.testing.assert_array_equal(out["image"], original)
    assert 10 < flipped < 30
    assert T.RandomHorizontalFlip(1.0)(coordinate_sample())["image"][0, 0, 1] == 63


def test_same_seed_same_augmentation():
    pipeline = T.train_pipeline(crop=(32, 40), max_depth=50_000)
    outs = [pipeline(coordinate_sample(seed=s)) for s in (5, 5, 6)]
    torch.testing.assert_close(outs[0]["image"], outs[1]["image"], rtol=0, atol=0)
    torch.testing.assert_close(outs[0]["depth"], outs[1]["depth"], rtol=0, atol=0)
    assert not torch.equal(outs[0]["image"], outs[2]["image"])


def test_random_steps_need_the_rng():
    sample = coordinate_sample()
    del sample["rng"]
    for step in (T.RandomCrop(8, 8), T.RandomHorizontalFlip(), T.RandomGamma(), T.VerticalCutDepth()):
        with pytest.raises(ValueError, match=r"sample\['rng'\]"):
            step(dict(sample))


def test_photometric_steps_leave_depth_alone_and_follow_their_formulas():
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    depth = np.ones((16, 16), np.float32)
    # gamma fixed at 0.5: 255 * (x / 255) ** 0.5, truncated
    out = T.RandomGamma(gamma_limit=(50, 50), p=1.0)({"image": levels, "depth": depth, "rng": np.random.default_rng(0)})
    expected = np.clip(255 * (np.arange(256) / 255) ** 0.5, 0, 255).astype(np.uint8)
    assert out["image"][..., 0].ravel().tolist() == expected.tolist() and out["depth"] is depth
    # contrast 0, brightness 0.1: x + 25.5, clipped to 255 and truncated
    out = T.RandomBrightnessContrast(brightness_limit=0, contrast_limit=0, p=1.0)(
        {"image": levels, "depth": depth, "rng": np.random.default_rng(0)})
    np.testing.assert_array_equal(out["image"], levels)
    rng = np.random.default_rng(1)
    out = T.RandomBrightnessContrast(p=1.0)({"image": levels, "depth": depth, "rng": rng})
    check = np.random.default_rng(1)
    check.random()
    alpha, beta = 1 + check.uniform(-0.2, 0.2), check.uniform(-0.2, 0.2)
    expected = np.clip(np.arange(256) * alpha + 255 * beta, 0, 255).astype(np.uint8)
    assert np.abs(out["image"][..., 0].ravel().astype(int) - expected.astype(int)).max() <= 1  # float32 LUT
    # hue / saturation / value shifts of at most 20 / 30 / 20 keep a grey image grey and within ±20
    grey = np.full((8, 8, 3), 128, np.uint8)
    for seed in range(10):
        out = T.HueSaturationValue(p=1.0)({"image": grey, "depth": depth, "rng": np.random.default_rng(seed)})
        assert np.abs(out["image"].astype(int) - 128).max() <= 20 + 30 // 2
    # p = 0: untouched, the same array
    for step in (T.RandomGamma(p=0), T.RandomBrightnessContrast(p=0), T.HueSaturationValue(p=0)):
        assert step({"image": levels, "depth": depth, "rng": np.random.default_rng(0)})["image"] is levels


def test_hue_shift_rotates_colours():
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 200  # OpenCV hue 0
    shifted = T.HueSaturationValue(hue_shift_limit=20, sat_shift_limit=0, val_shift_limit=0, p=1.0)
    for seed in range(8):
        out = shifted({"image": red, "depth": None, "rng": np.random.default_rng(seed)})["image"]
        check = np.random.default_rng(seed)
        check.random()
        expected = int(np.mod(check.uniform(-20, 20), 180))  # hue 0 + shift, wrapped, truncated
        hue = int(cv2.cvtColor(out, cv2.COLOR_RGB2HSV)[0, 0, 0])
        assert min(abs(hue - expected), 180 - abs(hue - expected)) <= 1, (seed, hue, expected)


def test_photometric_steps_need_uint8():
    sample = {"image": np.zeros((4, 4, 3), np.float32), "depth": np.ones((4, 4), np.float32),
              "rng": np.random.default_rng(0)}
    with pytest.raises(TypeError, match="uint8"):
        T.RandomGamma(p=1.0)(sample)


def test_cut_depth_rate_width_and_pasted_values():
    step = T.VerticalCutDepth(p=0.75, apply_prob=0.25, max_depth=10.0)
    height, width = 8, 200
    depth = np.tile(np.linspace(0, 12, width, dtype=np.float32), (height, 1))  # 0 (invalid) .. 12 m (> cap)
    applied, widths = 0, []
    for seed in range(4000):
        image = np.full((height, width, 3), 7, np.uint8)
        out = step({"image": image, "depth": depth, "rng": np.random.default_rng(seed)})
        changed = np.any(out["image"] != image, axis=(0, 2))
        if out["image"] is not image:
            applied += 1
            rng = np.random.default_rng(seed)
            rng.random()
            left, size = step.strip(width, rng)
            assert size >= 1
            columns = slice(left, left + size)
            expected = np.round(np.clip(depth[:, columns] / 10.0, 0, 1) * 255).astype(np.uint8)
            np.testing.assert_array_equal(out["image"][:, columns], np.repeat(expected[..., None], 3, axis=2))
            assert not changed[:left].any() and not changed[left + size:].any()
            widths.append(min(size, width - left))
        else:
            assert not changed.any()
    # ~25 % of samples: binomial sd = sqrt(0.25 * 0.75 / 4000) = 0.0068
    assert abs(applied / 4000 - 0.25) < 0.03
    # E[width] = E[(W - aW) b p] = W (1/2)(1/2)(0.75) = 0.1875 W, before the max(., 1) and int()
    assert abs(np.mean(widths) / width - 0.1875) < 0.02
    assert max(widths) <= 0.75 * width


def test_to_tensor_ranges_and_shapes():
    image = np.array([[[0, 128, 255]]], np.uint8).repeat(5, axis=0).repeat(6, axis=1)
    out = T.ToTensor()({"image": image, "depth": np.full((5, 6), 3.5, np.float32), "path": "x"})
    assert out["image"].shape == (3, 5, 6) and out["image"].dtype == torch.float32
    assert out["image"][:, 0, 0].tolist() == pytest.approx([0.0, 128 / 255, 1.0])
    assert out["depth"].shape == (1, 5, 6) and out["depth"].dtype == torch.float32 and float(out["depth"].max()) == 3.5
    assert out["path"] == "x"


def test_train_pipeline_on_nyu_sized_input():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    sample = {"image": image,
              "depth": rng.uniform(0, 10, (480, 640)).astype(np.float32), "rng": np.random.default_rng(1)}
    out = T.train_pipeline()(sample)
    assert out["image"].shape == (3, 448, 576) and out["depth"].shape == (1, 448, 576)
    assert 0 <= float(out["image"].min()) and float(out["image"].max()) <= 1
    assert [type(t).__name__ for t in T.train_pipeline().transforms] == [
        "RandomCrop", "RandomHorizontalFlip", "RandomBrightnessContrast", "RandomGamma", "HueSaturationValue",
        "VerticalCutDepth", "ToTensor"]
    test = T.test_pipeline()({"image": image, "depth": np.ones((480, 640), np.float32)})
    assert test["image"].shape == (3, 480, 640)


@pytest.mark.parametrize("build, word", [
    (lambda: T.RandomCrop(0, 5), "RandomCrop.height"),
    (lambda: T.RandomHorizontalFlip(1.5), "probability"),
    (lambda: T.RandomGamma(gamma_limit=(120, 80)), "0 < low <= high"),
    (lambda: T.RandomGamma(gamma_limit=90), "0 < low <= high"),
    (lambda: T.HueSaturationValue(hue_shift_limit=-1), ">= 0"),
    (lambda: T.VerticalCutDepth(max_depth=0), "max_depth"),
    (lambda: T.VerticalCutDepth(apply_prob=2), "apply_prob"),
])
def test_steps_reject_bad_arguments(build, word):
    with pytest.raises(ValueError, match=word):
        build()
