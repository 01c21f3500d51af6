"""The classification pipelines: DeiT's evaluation transform against the reference code on real photographs,
the training augmentation's shapes and per-sample determinism, and batch mixing with label smoothing."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as reference

from tasks.classification.transforms import EvalTransform, MixCollate, TrainTransform
from tasks.common.images import IMAGENET_MEAN, IMAGENET_STD

skimage_data = pytest.importorskip("skimage.data")
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field"]  # square, landscape, 1000x872


def _deit_eval(size=224, crop_pct=0.875):
    """DeiT's ``build_transform(is_train=False)`` (what the PVTv2 authors evaluated with), on a PIL image."""
    return reference.Compose([
        reference.Resize(int(size / crop_pct), interpolation=reference.InterpolationMode.BICUBIC),
        reference.CenterCrop(size),
        reference.ToTensor(),
        reference.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("size, crop_pct", [(224, 0.875), (224, 0.9), (384, 1.0)])
def test_eval_transform_equals_deit_protocol(name, size, crop_pct):
    image = getattr(skimage_data, name)()
    ours = EvalTransform(size, crop_pct=crop_pct)({"image": image})["image"]
    expected = _deit_eval(size, crop_pct)(Image.fromarray(image))
    assert ours.shape == expected.shape == (3, size, size)
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", PHOTOS[:3])
def test_eval_transform_fixed_resize_is_hugging_faces(name):
    image = getattr(skimage_data, name)()
    ours = EvalTransform(224, resize="fixed", interpolation="bilinear")({"image": image})["image"]
    ref = reference.Compose([reference.Resize((224, 224), interpolation=reference.InterpolationMode.BILINEAR),
                             reference.ToTensor(), reference.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    torch.testing.assert_close(ours, ref(Image.fromarray(image)), atol=1e-6, rtol=0)


def test_eval_transform_rejects_bad_settings():
    with pytest.raises(ValueError, match="resize"):
        EvalTransform(224, resize="shortest")
    with pytest.raises(ValueError, match="crop_pct"):
        EvalTransform(224, crop_pct=1.5)
    with pytest.raises(ValueError, match="interpolation"):
        EvalTransform(224, interpolation="lanczos")


def _sample(seed):
    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    return {"image": image, "label": 2, "rng": np.random.default_rng(seed)}


def test_train_transform_is_a_function_of_the_sample_seed():
    t = TrainTransform(64)
    state = torch.get_rng_state()
    a, b, c = t(_sample(1)), t(_sample(1)), t(_sample(2))
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left alone
    assert a["image"].shape == (3, 64, 64) and a["image"].dtype == torch.float32
    assert torch.equal(a["image"], b["image"]) and a["mix_seed"] == b["mix_seed"]
    assert not torch.equal(a["image"], c["image"])


def test_train_transform_without_random_steps_is_the_normalised_image():
    t = TrainTransform(32, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0, rand_augment=None, erasing=0)
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = t({"image": image, "label": 0, "rng": np.random.default_rng(0)})["image"]
    expected = (torch.from_numpy(image).permute(2, 0, 1) / 255 - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def _batch(labels, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.rand(3, 16, 16, generator=g), "label": label, "mix_seed": 10 * seed + i}
            for i, label in enumerate(labels)]


def test_mix_collate_soft_targets():
    k, smoothing = 5, 0.1
    batch = MixCollate(k, label_smoothing=smoothing)(_batch([0, 1, 2, 3]))
    target = batch["target"]
    assert batch["image"].shape == (4, 3, 16, 16) and target.shape == (4, k)
    torch.testing.assert_close(target.sum(1), torch.ones(4))
    assert target.min() >= smoothing / k - 1e-7
    again = MixCollate(k, label_smoothing=smoothing)(_batch([0, 1, 2, 3]))
    assert torch.equal(batch["image"], again["image"]) and torch.equal(target, again["target"])


def test_mix_collate_without_mixing_is_label_smoothing():
    samples = _batch([0, 3, 1])
    batch = MixCollate(4, mixup_alpha=0, cutmix_alpha=0, label_smoothing=0.1)(samples)
    expected = torch.full((3, 4), 0.025)
    expected[[0, 1, 2], [0, 3, 1]] = 0.925
    torch.testing.assert_close(batch["target"], expected)
    assert torch.equal(batch["image"], torch.stack([s["image"] for s in samples]))


def test_cutmix_pastes_a_box_and_weights_targets_by_its_area():
    samples = _batch([0, 1])
    batch = MixCollate(2, mixup_alpha=0, cutmix_alpha=1.0, label_smoothing=0.0)(samples)
    first, second = samples[0]["image"], samples[1]["image"]
    from_first = (batch["image"][0] == first).all(0)
    from_second = (batch["image"][0] == second).all(0)
    assert bool((from_first | from_second).all())
    torch.testing.assert_close(batch["target"][0, 0], from_first.float().mean(), atol=1e-6, rtol=0)


def test_mix_collate_rejects_bad_settings():
    with pytest.raises(ValueError, match="label_smoothing"):
        MixCollate(3, label_smoothing=1.0)
    with pytest.raises(ValueError, match="alpha"):
        MixCollate(3, mixup_alpha=-1)


@pytest.mark.parametrize("name", PHOTOS)
def test_model_preprocessing_matches_the_protocol_within_one_grey_level(name):
    """``ImageClassifier.predict`` resizes uint8 tensors with torchvision, evaluation uses PIL: at most one grey
    level apart (1 / 255 / std in normalised units), the same on average to 1e-3."""
    from tasks.classification import ImageClassifier

    image = getattr(skimage_data, name)()
    ours = ImageClassifier.default_preprocessing(image)[0]
    expected = _deit_eval()(Image.fromarray(image))
    diff = (ours - expected).abs()
    assert diff.max() <= 1.0001 / 255 / min(IMAGENET_STD) and diff.mean() < 1e-3
