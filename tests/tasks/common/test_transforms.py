"""The steps every task shares: RandomHorizontalFlip moves the image and the targets its pipeline names with it."""
import numpy as np
import pytest

from tasks.common.transforms import RandomHorizontalFlip


def test_flip_moves_image_mask_depth_and_boxes_together():
    width = 10
    image = np.broadcast_to(np.arange(width, dtype=np.uint8)[None, :, None], (4, width, 3)).copy()
    sample = {"image": image, "mask": image[..., 0] % 3, "depth": image[..., 0].astype(np.float32),
              "boxes": np.array([[1, 0, 3, 2], [6, 1, 10, 4]], np.float32), "labels": np.array([4, 5]),
              "rng": np.random.default_rng(0)}
    out = RandomHorizontalFlip(prob=1.0, keys={"mask": "hw", "depth": "hw", "boxes": "xyxy"})(sample)
    assert np.array_equal(out["image"][0, :, 0], np.arange(width)[::-1])
    assert np.array_equal(out["mask"], out["image"][..., 0] % 3) and np.array_equal(out["depth"], out["image"][..., 0])
    assert out["boxes"].dtype == np.float32 and out["boxes"].tolist() == [[7, 0, 9, 2], [0, 1, 4, 4]]
    assert out["labels"].tolist() == [4, 5] and all(out[k].flags.c_contiguous for k in ("image", "mask", "depth"))


def test_flip_draws_once_per_sample():
    image = np.arange(8, dtype=np.uint8).reshape(1, 8, 1).repeat(3, axis=2)
    flips = [RandomHorizontalFlip(0.5)({"image": image, "rng": np.random.default_rng(s)})["image"][0, 0, 0] == 7
             for s in range(60)]
    assert 10 < sum(flips) < 50
    replay = [np.random.default_rng(s).random() < 0.5 for s in range(60)]
    assert flips == replay  # one draw, compared with prob
    kept = RandomHorizontalFlip(prob=0.0)({"image": image, "boxes": np.zeros((0, 4), np.float32), "rng": np.random.default_rng(0)})
    assert kept["image"] is image and kept["boxes"].shape == (0, 4)


def test_flip_of_an_empty_box_list():
    out = RandomHorizontalFlip(1.0, keys={"boxes": "xyxy"})({"image": np.zeros((2, 5, 3), np.uint8), "boxes": np.zeros((0, 4), np.float32),
                                     "rng": np.random.default_rng(0)})
    assert out["boxes"].shape == (0, 4)


def test_flip_moves_only_the_keys_its_pipeline_names():
    """What a flip mirrors is the step's own: no other pipeline or imported task changes it."""
    image = np.arange(6, dtype=np.uint8).reshape(1, 6, 1).repeat(3, axis=2)
    target = image[..., 0].copy()
    sample = {"image": image, "mask": target, "depth": target, "rng": np.random.default_rng(0)}
    out = RandomHorizontalFlip(1.0, keys={"depth": "hw"})(sample)
    assert out["image"][0, 0, 0] == 5 and out["depth"][0, 0] == 5
    assert out["mask"] is target  # not named: left as it is
    assert RandomHorizontalFlip(1.0)({"image": image, "mask": target, "rng": np.random.default_rng(0)})["mask"] is target


@pytest.mark.parametrize("keys, error", [
    ({"mask": "xy"}, ValueError), ({"image": "hw"}, ValueError), ({3: "hw"}, ValueError), (["mask"], TypeError),
])
def test_flip_rejects_bad_keys(keys, error):
    with pytest.raises(error, match=r"RandomHorizontalFlip\.keys"):
        RandomHorizontalFlip(keys=keys)


def test_the_transforms_do_not_import_the_registry():
    """Flip keys are the pipeline's, so the transforms need nothing from the registry (no import loop)."""
    import ast
    from pathlib import Path

    import tasks.common.transforms as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [name for name in imported if "registry" in name]


@pytest.mark.parametrize("prob", [1.5, -0.1, True, "0.5"])
def test_flip_rejects_bad_probabilities(prob):
    with pytest.raises(ValueError, match=r"RandomHorizontalFlip\.prob must be a probability in \[0, 1\]"):
        RandomHorizontalFlip(prob)


def test_flip_needs_the_sample_rng():
    with pytest.raises(ValueError, match=r"RandomHorizontalFlip draws from sample\['rng'\]"):
        RandomHorizontalFlip()({"image": np.zeros((2, 2, 3), np.uint8)})
