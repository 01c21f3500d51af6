"""Class-folder datasets (ImageNet layout and your own), their errors, and the toy writer."""
import json

import cv2
import numpy as np
import pytest

from tasks.classification import ImageFolder, ImageNet, imagenet_classes
from tasks.classification.toy import TOY_CLASSES, ensure_toy_dataset, write_toy_dataset


def _write(path, value=0, size=(20, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*size, 3), value, np.uint8))


def test_image_folder_labels_follow_sorted_folder_names(tmp_path):
    for name, count in (("zebra", 2), ("ant", 1), ("mole", 3)):
        for i in range(count):
            _write(tmp_path / name / f"{i}.JPEG" if i % 2 else tmp_path / name / "sub" / f"{i}.png", value=10 * i)
    (tmp_path / "mole" / "notes.txt").write_text("not an image")
    ds = ImageFolder(tmp_path)
    assert ds.class_names == ("ant", "mole", "zebra") and len(ds) == 6
    assert [label for _, label in ds.samples] == [0, 1, 1, 1, 2, 2]
    sample = ds[1]
    assert sample["image"].shape == (20, 30, 3) and sample["image"].dtype == np.uint8 and sample["label"] == 1
    named = ImageFolder(tmp_path, class_names=["Ant", "Mole", "Zebra"])
    assert named.class_names == ("Ant", "Mole", "Zebra") and named.folder_names == ("ant", "mole", "zebra")


def test_image_folder_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no class folders"):
        ImageFolder(tmp_path)
    _write(tmp_path / "a" / "x.jpg")
    (tmp_path / "b").mkdir()
    with pytest.raises(FileNotFoundError, match=r"class folder .*b holds no images"):
        ImageFolder(tmp_path)
    _write(tmp_path / "b" / "y.jpg")
    with pytest.raises(ValueError, match="one name per class folder"):
        ImageFolder(tmp_path, class_names=["only one"])
    (tmp_path / "b" / "y.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    ds = ImageFolder(tmp_path)
    with pytest.raises(ValueError, match=r"y\.jpg"):
        ds[1]


def test_imagenet_classes_table():
    wnids, names = imagenet_classes()
    assert len(wnids) == len(set(wnids)) == len(names) == 1000 and list(wnids) == sorted(wnids)
    assert (wnids[0], names[0]) == ("n01440764", "tench, Tinca tinca")
    assert names[-1] == "toilet tissue, toilet paper, bathroom tissue"


def test_imagenet_layout_names(tmp_path):
    wnids, names = imagenet_classes()
    for wnid in wnids:
        _write(tmp_path / "val" / wnid / f"ILSVRC2012_val_{wnid}.JPEG", size=(4, 4))
    ds = ImageNet(tmp_path, "val")
    assert ds.class_names == names and ds.wnids == wnids
    for wnid in wnids[:3]:
        _write(tmp_path / "train" / wnid / f"{wnid}_1.JPEG", size=(4, 4))
    subset = ImageNet(tmp_path, "train")  # not the 1000 classes: the wnids are the names
    assert subset.class_names == wnids[:3]
    with pytest.raises(ValueError, match="split"):
        ImageNet(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="train/<wnid>"):
        ImageNet(tmp_path / "nowhere", "train")


def test_toy_dataset_in_the_imagenet_layout(tmp_path):
    root = write_toy_dataset(tmp_path / "toy", num_train=2, num_val=1, size=(40, 48), seed=3)
    train, val = ImageNet(root, "train"), ImageNet(root, "val")
    assert train.class_names == tuple(sorted(TOY_CLASSES)) and len(train) == 2 * len(TOY_CLASSES)
    assert len(val) == len(TOY_CLASSES) and all(p.suffix == ".JPEG" for p, _ in val.samples)
    assert val[0]["image"].shape == (40, 48, 3)
    stamp = (root / ".complete").stat().st_mtime_ns
    assert ensure_toy_dataset(root, num_train=2, num_val=1, size=(40, 48), seed=3) == root
    assert (root / ".complete").stat().st_mtime_ns == stamp  # complete with these parameters: not rewritten
    assert json.loads((root / ".complete").read_text())["classes"] == list(TOY_CLASSES)
    real = tmp_path / "real"
    _write(real / "train" / "cat" / "1.jpg")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        write_toy_dataset(real, num_train=1, num_val=1)
