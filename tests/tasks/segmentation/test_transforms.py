"""The SegFormer pipelines step by step: sizes by hand, labels kept by nearest resizing, crop balancing,
flip consistency, pad values, normalisation, and determinism from the per-sample generator."""
import numpy as np
import pytest
import torch

from tasks.segmentation import transforms as T


def _sample(h=40, w=60, num_classes=5, seed=0, rng_seed=None) -> dict:
    rng = np.random.default_rng(seed)
    sample = {
        "image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "mask": rng.integers(0, num_classes, (h, w)).astype(np.uint8),
        "path": "x.jpg",
    }
    sample["mask"][:3] = 255
    if rng_seed is not None:
        sample["rng"] = np.random.default_rng(rng_seed)
    return sample


@pytest.mark.parametrize("size, scale, expected", [
    ((512, 683), (2048, 512), (512, 683)),   # factor min(2048/683, 512/512) = 1
    ((364, 500), (2048, 512), (512, 703)),   # factor 512/364 = 1.40659: 500 * 1.40659 + 0.5 = 703.80 -> 703
    ((300, 400), (2048, 512), (512, 683)),   # factor 512/300: 400 * 1.70667 + 0.5 = 683.17 -> 683
    ((1000, 200), (2048, 512), (2048, 410)), # factor min(2048/1000, 512/200) = 2.048: 200 * 2.048 = 409.6 -> 410
    ((3000, 4000), (512, 2048), (512, 683)), # either order; factor 512/3000: 4000 * 0.170667 = 682.67 -> 683
])
def test_rescale_size_by_hand(size, scale, expected):
    assert T.rescale_size(*size, scale) == expected


@pytest.mark.parametrize("size, aligned", [
    ((512, 683), (512, 704)),    # 683 -> ceil(683 / 32) * 32 = 22 * 32 = 704
    ((364, 500), (512, 704)),    # rescaled to 512 x 703, then 703 -> 704
    ((300, 400), (512, 704)),
    ((1000, 200), (2048, 416)),  # 410 -> 13 * 32 = 416
])
def test_test_resize_sizes_and_mask_kept(size, aligned):
    sample = _sample(*size)
    mask = sample["mask"].copy()
    out = T.TestResize((2048, 512), size_divisor=32)(sample)
    assert out["image"].shape == (*aligned, 3) and out["image"].dtype == np.uint8
    assert np.array_equal(out["mask"], mask)  # evaluation happens at the original size
    assert out["ori_size"] == size


def test_random_resize_size_follows_the_drawn_ratio():
    sample = _sample(40, 60, rng_seed=3)
    labels = set(np.unique(sample["mask"]))
    out = T.RandomResize((200, 50), ratio_range=(0.5, 2.0))(sample)
    ratio = 0.5 + np.random.default_rng(3).random() * 1.5  # the one draw RandomResize makes
    expected = T.rescale_size(40, 60, (int(200 * ratio), int(50 * ratio)))
    assert out["image"].shape[:2] == out["mask"].shape == expected
    assert set(np.unique(out["mask"])) <= labels  # nearest: no new labels


def test_nearest_resize_keeps_labels_over_many_ratios():
    for seed in range(10):
        sample = _sample(31, 47, num_classes=9, seed=seed, rng_seed=seed)
        labels = set(np.unique(sample["mask"]))
        out = T.RandomResize((100, 25), ratio_range=(0.3, 3.0))(sample)
        assert set(np.unique(out["mask"])) <= labels
        assert out["mask"].dtype == np.uint8


def test_random_crop_shapes():
    out = T.RandomCrop((16, 24), cat_max_ratio=1.0)(_sample(40, 60, rng_seed=0))
    assert out["image"].shape == (16, 24, 3) and out["mask"].shape == (16, 24)
    small = T.RandomCrop((64, 64))(_sample(20, 30, rng_seed=0))  # smaller image: kept whole
    assert small["image"].shape == (20, 30, 3) and small["mask"].shape == (20, 30)


def _balanced(mask, ratio=0.75, ignore=255):
    labels, counts = np.unique(mask[mask != ignore], return_counts=True)
    return len(labels) > 1 and counts.max() / counts.sum() < ratio


def test_cat_max_ratio_redraws_dominated_crops():
    # Columns 0..63 are class 1; columns 64..127 alternate classes 2 and 3 by row. A 64x64 window at
    # column x holds (64 - x) / 64 of class 1, so it is balanced iff x > 16: 48 of the 65 offsets.
    mask = np.ones((64, 128), np.uint8)
    mask[:, 64:] = 2 + np.arange(64)[:, None] % 2
    image = np.zeros((64, 128, 3), np.uint8)
    checked, unchecked = [], []
    for seed in range(40):
        for ratio, out in ((0.75, checked), (1.0, unchecked)):
            sample = {"image": image, "mask": mask, "rng": np.random.default_rng(seed)}
            out.append(_balanced(T.RandomCrop((64, 64), cat_max_ratio=ratio)(sample)["mask"]))
    assert all(checked)
    assert not all(unchecked)  # without the check about a quarter of the windows are dominated


def test_cat_max_ratio_ignores_ignore_pixels_and_gives_up_after_ten_redraws():
    crop = T.RandomCrop((8, 8), cat_max_ratio=0.75)
    # Mostly ignore pixels plus two balanced classes: the first window is accepted, as with no check.
    mask = np.full((16, 16), 255, np.uint8)
    mask[::4, ::2] = 0
    mask[2::4, ::2] = 1
    image = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    first = T.RandomCrop((8, 8), cat_max_ratio=1.0)({"image": image, "mask": mask, "rng": np.random.default_rng(5)})
    ours = crop({"image": image, "mask": mask, "rng": np.random.default_rng(5)})
    assert np.array_equal(first["image"], ours["image"])
    # One class (plus ignore) can never pass: 11 windows are drawn (2 draws each) and the last one is kept.
    mask = np.where(np.arange(16)[:, None] % 3 == 0, 255, 4).astype(np.uint8) * np.ones((1, 16), np.uint8)
    out = crop({"image": image, "mask": mask, "rng": np.random.default_rng(6)})
    replay = np.random.default_rng(6)
    for _ in range(11):
        top, left = int(replay.integers(0, 9)), int(replay.integers(0, 9))
    assert np.array_equal(out["image"], image[top : top + 8, left : left + 8])


def test_flip_moves_image_and_mask_together():
    image = np.broadcast_to(np.arange(10, dtype=np.uint8)[None, :, None], (4, 10, 3)).copy()
    mask = np.broadcast_to(np.arange(10, dtype=np.uint8) % 3, (4, 10)).copy()
    out = T.RandomHorizontalFlip(prob=1.0, keys={"mask": "hw"})({"image": image, "mask": mask, "rng": np.random.default_rng(0)})
    assert np.array_equal(out["image"][0, :, 0], np.arange(10)[::-1])
    assert np.array_equal(out["mask"], out["image"][..., 0] % 3)  # still aligned pixel by pixel
    kept = T.RandomHorizontalFlip(prob=0.0)({"image": image, "mask": mask, "rng": np.random.default_rng(0)})
    assert np.array_equal(kept["image"], image)
    flips = [T.RandomHorizontalFlip(0.5)({"image": image, "rng": np.random.default_rng(s)})["image"][0, 0, 0] == 9 for s in range(40)]
    assert 5 < sum(flips) < 35


def test_photometric_distortion_keeps_grey_grey_and_bounds_brightness():
    grey = np.full((8, 8, 3), 100, np.uint8)
    changed = 0
    for seed in range(20):
        out = T.PhotoMetricDistortion()({"image": grey.copy(), "rng": np.random.default_rng(seed)})["image"]
        assert out.dtype == np.uint8 and out.shape == grey.shape
        # Saturation and hue leave a grey pixel grey; only brightness and contrast move it.
        assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
        changed += int(out[0, 0, 0] != 100)
        only_brightness = T.PhotoMetricDistortion(contrast_range=(1, 1), saturation_range=(1, 1), hue_delta=0)
        out = only_brightness({"image": grey.copy(), "rng": np.random.default_rng(seed)})["image"]
        assert abs(int(out[0, 0, 0]) - 100) <= 32
    assert changed > 5
    with pytest.raises(TypeError, match="before Normalize"):
        T.PhotoMetricDistortion()({"image": grey.astype(np.float32), "rng": np.random.default_rng(0)})


def test_photometric_distortion_is_deterministic_and_leaves_mask():
    outs = [T.PhotoMetricDistortion()(_sample(rng_seed=11)) for _ in range(2)]
    assert np.array_equal(outs[0]["image"], outs[1]["image"])
    assert np.array_equal(outs[0]["mask"], _sample()["mask"])
    assert not np.array_equal(T.PhotoMetricDistortion()(_sample(rng_seed=12))["image"], outs[0]["image"])


def test_normalize_values():
    image = np.array([[[123.675, 116.28, 103.53], [255, 255, 255], [0, 0, 0]]], dtype=np.float64).astype(np.uint8)
    out = T.Normalize()({"image": image})["image"]
    assert out.dtype == np.float32 and out.shape == (1, 3, 3)
    mean, std = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])
    np.testing.assert_allclose(out[0, 0], (np.array([123, 116, 103]) - mean) / std, atol=1e-6)
    np.testing.assert_allclose(out[0, 1], (255 - mean) / std, rtol=1e-6)  # [2.2489, 2.4286, 2.6400]
    np.testing.assert_allclose(out[0, 2], -mean / std, rtol=1e-6)          # [-2.1179, -2.0357, -1.8044]


def test_pad_values():
    sample = {"image": np.ones((5, 7, 3), np.float32), "mask": np.zeros((5, 7), np.uint8)}
    out = T.Pad((8, 10), pad_val=0, seg_pad_val=255)(sample)
    assert out["image"].shape == (8, 10, 3) and out["mask"].shape == (8, 10)
    assert (out["image"][:5, :7] == 1).all() and (out["image"][5:] == 0).all() and (out["image"][:, 7:] == 0).all()
    assert (out["mask"][:5, :7] == 0).all() and (out["mask"][5:] == 255).all() and (out["mask"][:, 7:] == 255).all()
    big = T.Pad((4, 4))({"image": np.ones((5, 7, 3), np.float32), "mask": np.zeros((5, 7), np.uint8)})
    assert big["image"].shape == (5, 7, 3)


def test_to_tensor():
    out = T.ToTensor()({"image": np.zeros((5, 7, 3), np.float32), "mask": np.zeros((5, 7), np.uint8), "path": "p"})
    assert out["image"].shape == (3, 5, 7) and out["image"].dtype == torch.float32
    assert out["mask"].shape == (5, 7) and out["mask"].dtype == torch.int64 and out["path"] == "p"


def test_train_pipeline_shapes_and_determinism():
    pipeline = T.train_pipeline(crop=32, scale=(128, 32))
    outs = [pipeline(_sample(24, 36, rng_seed=(1, 0, 4))) for _ in range(2)]
    for out in outs:
        assert out["image"].shape == (3, 32, 32) and out["image"].dtype == torch.float32
        assert out["mask"].shape == (32, 32) and out["mask"].dtype == torch.int64
        assert set(out["mask"].unique().tolist()) <= set(range(5)) | {255}
    assert outs[0]["image"].equal(outs[1]["image"]) and outs[0]["mask"].equal(outs[1]["mask"])
    other = pipeline(_sample(24, 36, rng_seed=(1, 0, 5)))
    assert not other["image"].equal(outs[0]["image"])


def test_test_pipeline():
    out = T.test_pipeline()(_sample(300, 400))
    assert out["image"].shape == (3, 512, 704) and out["mask"].shape == (300, 400)
    assert out["ori_size"] == (300, 400) and "rng" not in out


def test_random_steps_need_a_generator():
    for step in (T.RandomResize(), T.RandomCrop(), T.RandomHorizontalFlip(), T.PhotoMetricDistortion()):
        with pytest.raises(ValueError, match=r"sample\['rng'\]"):
            step(_sample())


@pytest.mark.parametrize("build, word", [
    (lambda: T.RandomResize(scale=(512,)), "RandomResize.scale"),
    (lambda: T.RandomResize(ratio_range=(2.0, 0.5)), "ratio_range"),
    (lambda: T.RandomCrop(crop_size=(512.0, 512)), "RandomCrop.crop_size"),
    (lambda: T.RandomCrop(cat_max_ratio=0), "cat_max_ratio"),
    (lambda: T.RandomHorizontalFlip(prob=1.5), "prob"),
    (lambda: T.PhotoMetricDistortion(contrast_range=(1.5, 0.5)), "contrast_range"),
    (lambda: T.Normalize(std=(1, 0, 1)), "std"),
    (lambda: T.Pad(size=(0, 4)), "Pad.size"),
    (lambda: T.TestResize(size_divisor=0), "size_divisor"),
])
def test_constructors_reject_bad_arguments(build, word):
    with pytest.raises(ValueError, match=word):
        build()
    with pytest.raises(TypeError, match=r"transforms\[1\]"):
        T.Compose([T.ToTensor(), "not a transform"])
