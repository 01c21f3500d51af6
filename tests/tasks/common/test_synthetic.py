"""The synthetic scenes and the machinery the three toy writers share: determinism, markers, refusing real data."""
import json

import numpy as np
import pytest

from tasks.common.synthetic import MIN_VISIBLE_PIXELS, make_scene
from tasks.depth import toy as depth_toy
from tasks.detection import toy as detection_toy
from tasks.segmentation import toy as segmentation_toy

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")  # numpy 2 vs annToMask
SMALL = dict(num_train=5, num_val=12, seed=3)
TOYS = [segmentation_toy, depth_toy, detection_toy]


def all_bytes(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_scene_invariants():
    for index in range(20):
        scene = make_scene(np.random.default_rng(index), 96, 128)
        assert scene.image.shape == (96, 128, 3) and scene.image.dtype == np.uint8
        assert scene.labels.shape == (96, 128) and scene.labels.dtype == np.uint8 and scene.labels.max() <= 3
        assert scene.depth.dtype == np.float32 and 1.0 <= scene.depth.min() and scene.depth.max() <= 8.0
        covered = np.zeros((96, 128), bool)
        for class_id, mask, (x0, y0, x1, y1) in scene.instances:
            assert 1 <= class_id <= 3 and mask.sum() >= MIN_VISIBLE_PIXELS
            assert (scene.labels[mask] == class_id).all() and not (covered & mask).any()
            ys, xs = np.nonzero(mask)
            assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert np.ptp(scene.depth[mask]) == 0  # an object is a fronto-parallel board
            covered |= mask
    empty = make_scene(np.random.default_rng(0), 64, 64, num_objects=0)
    assert empty.instances == [] and not empty.labels.any()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="height and width"):
        make_scene(np.random.default_rng(0), 16, 64)
    with pytest.raises(ValueError, match="num_val"):
        segmentation_toy.write_toy_dataset(tmp_path, num_train=2, num_val=0)
    with pytest.raises(ValueError, match="size"):
        detection_toy.write_toy_dataset(tmp_path, num_train=2, num_val=2, size=(128,))
    with pytest.raises(ValueError, match="size"):
        depth_toy.ensure_toy_dataset(tmp_path, num_train=2, num_val=2, size=128)
    assert not any(tmp_path.iterdir())  # checked before anything is written


@pytest.mark.parametrize("toy", TOYS, ids=lambda m: m.__name__)
def test_writers_are_deterministic(tmp_path, toy):
    first = toy.write_toy_dataset(tmp_path / "first", **SMALL)
    again = toy.write_toy_dataset(tmp_path / "again", **SMALL)
    assert all_bytes(again) == all_bytes(first)
    other = toy.write_toy_dataset(tmp_path / "other", **{**SMALL, "seed": 4})
    assert all_bytes(other).keys() == all_bytes(first).keys() and all_bytes(other) != all_bytes(first)


def test_an_image_does_not_depend_on_how_many_are_written(tmp_path):
    few = segmentation_toy.write_toy_dataset(tmp_path / "few", num_train=2, num_val=1)
    many = segmentation_toy.write_toy_dataset(tmp_path / "many", num_train=6, num_val=3)
    name = "images/validation/ADE_val_00000001.jpg"
    assert (few / name).read_bytes() == (many / name).read_bytes()


@pytest.mark.parametrize("toy", TOYS, ids=lambda m: m.__name__)
def test_ensure_regenerates_only_when_needed(tmp_path, monkeypatch, toy):
    out = toy.ensure_toy_dataset(tmp_path, num_train=2, num_val=2)
    marker = json.loads((out / ".complete").read_text())
    assert marker["num_train"] == 2
    sentinel = out / "sentinel"
    sentinel.write_text("kept while the marker matches")
    writes = []
    original = toy.write_toy_dataset
    monkeypatch.setattr(toy, "write_toy_dataset", lambda *a, **k: writes.append(1) or original(*a, **k))
    assert toy.ensure_toy_dataset(tmp_path, num_train=2, num_val=2) == out and writes == []
    (out / ".complete").unlink()  # as after an interrupted generation
    assert toy.ensure_toy_dataset(tmp_path, num_train=2, num_val=2) == out and writes == [1]
    toy.ensure_toy_dataset(tmp_path, num_train=3, num_val=2)
    assert writes == [1, 1] and json.loads((out / ".complete").read_text())["num_train"] == 3
    assert sentinel.exists()  # only the dataset's own folders are replaced


def test_an_interrupted_write_is_not_marked_complete(tmp_path, monkeypatch):
    def disk_full(path, rgb):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(segmentation_toy, "write_jpeg", disk_full)
    with pytest.raises(OSError, match="No space left"):
        segmentation_toy.ensure_toy_dataset(tmp_path, num_train=2, num_val=2)
    out = tmp_path / "ADEChallengeData2016"
    assert (out / ".synthetic").exists() and not (out / ".complete").exists()
    monkeypatch.undo()
    assert (segmentation_toy.ensure_toy_dataset(tmp_path, num_train=2, num_val=2) / ".complete").exists()


def test_refuses_to_overwrite_unmarked_data(tmp_path):
    (tmp_path / "train2017").mkdir()
    (tmp_path / "train2017" / "000000000009.jpg").write_bytes(b"a real image")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        detection_toy.ensure_toy_dataset(tmp_path, num_train=2, num_val=2)
    assert (tmp_path / "train2017" / "000000000009.jpg").exists()
