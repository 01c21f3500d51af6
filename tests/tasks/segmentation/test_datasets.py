"""ADE20K on the three real validation images in tests/data, the folder dataset on a folder made here, and the
errors a user meets first."""
import csv
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tasks.segmentation import transforms as T
from tasks.segmentation.datasets import ADE20K, ADE20K_CLASSES, ADE20K_PALETTE, SegmentationFolder

ADE_ROOT = Path(__file__).resolve().parents[2] / "data" / "ade20k_sample"
ADE_VAL_MASKS = ADE_ROOT / "ADEChallengeData2016" / "annotations" / "validation"


def test_ade20k_validation_samples():
    dataset = ADE20K(ADE_ROOT, split="validation")
    assert len(dataset) == 3 and dataset.num_classes == 150 and len(dataset.class_names) == 150
    sizes = [(512, 683), (364, 500), (300, 400)]
    for i, size in enumerate(sizes):
        sample = dataset[i]
        assert set(sample) == {"image", "mask", "path"}
        assert Path(sample["path"]).name == f"ADE_val_0000000{i + 1}.jpg"
        assert sample["image"].shape == (*size, 3) and sample["image"].dtype == np.uint8
        assert sample["mask"].shape == size and sample["mask"].dtype == np.uint8
        # cv2 reads BGR; the sample is RGB.
        bgr = cv2.imread(sample["path"])
        assert np.array_equal(sample["image"], bgr[..., ::-1])


def test_ade20k_reduce_zero_label_against_raw_png():
    dataset = ADE20K(ADE_ROOT / "ADEChallengeData2016", split="validation")  # the folder itself works too
    for i, png in enumerate(sorted(ADE_VAL_MASKS.glob("*.png"))):
        raw = np.array(Image.open(png)).astype(np.int64)
        assert raw.min() == 0 and 0 < raw.max() <= 150  # 0 = "other objects" is present in all three
        expected = np.where(raw == 0, 255, raw - 1)
        mask = dataset[i]["mask"]
        assert np.array_equal(mask, expected)
        assert set(np.unique(mask)) <= set(range(150)) | {255}


def test_ade20k_class_names_follow_object_info_csv():
    assert len(ADE20K_CLASSES) == 150 and len(set(ADE20K_CLASSES)) == 150
    assert ADE20K_CLASSES[7] == "bed"  # mmseg's 'bed ' without its trailing space
    assert all(name == name.strip() and name for name in ADE20K_CLASSES)
    with open(ADE_ROOT / "objectInfo150.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["Idx"]) for r in rows] == list(range(1, 151))
    for i, (name, row) in enumerate(zip(ADE20K_CLASSES, rows)):
        # The csv joins a name's words with ';' like its synonyms: "chest;of;drawers;chest;bureau;dresser".
        words = name.replace(" ", ";")
        if i == 89:  # mmseg took "television receiver", a later synonym of "television;television;receiver;..."
            assert f";{words};" in f";{row['Name']};"
            continue
        assert row["Name"] == words or row["Name"].startswith(words + ";"), (name, row["Name"])


def test_ade20k_palette_is_distinct():
    palette = np.array(ADE20K_PALETTE)
    assert palette.shape == (150, 3) and palette.min() >= 0 and palette.max() <= 255
    assert len(set(ADE20K_PALETTE)) == 150 and (0, 0, 0) not in ADE20K_PALETTE
    closest = min(np.linalg.norm(a - b) for a, b in combinations(palette.astype(float), 2))
    assert closest > 40


def test_ade20k_missing_root_names_expected_path(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        ADE20K(tmp_path / "nowhere", split="validation")
    assert str(tmp_path / "nowhere" / "images" / "validation") in str(info.value)
    assert "ADEChallengeData2016" in str(info.value)
    with pytest.raises(FileNotFoundError, match="images/training"):  # the sample ships no training split
        ADE20K(ADE_ROOT, split="training")
    with pytest.raises(ValueError, match="split"):
        ADE20K(ADE_ROOT, split="val")


def _palette_png(path: Path, indices: np.ndarray) -> None:
    image = Image.fromarray(indices.astype(np.uint8), mode="P")
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))  # colours unrelated to indices
    image.save(path)


@pytest.fixture
def folder(tmp_path):
    """Two images (jpg and png) with an "L" mask and a palette ("P") mask; classes 0..2, 255 ignored."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(images / "a.jpg"), rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    cv2.imwrite(str(images / "b.png"), rng.integers(0, 256, (16, 12, 3), dtype=np.uint8))
    a = rng.integers(0, 3, (20, 30)).astype(np.uint8)
    a[0] = 255
    Image.fromarray(a, mode="L").save(masks / "a.png")
    b = np.tile(np.array([0, 1, 2]), (16, 4))
    _palette_png(masks / "b.png", b)
    (images / "notes.txt").write_text("not an image: skipped")
    return images, masks, {"a": a, "b": b}


def test_folder_dataset_reads_pairs_by_stem(folder):
    images, masks, expected = folder
    dataset = SegmentationFolder(images, masks, ["sky", "road", "car"])
    assert len(dataset) == 2 and dataset.num_classes == 3 and dataset.class_names == ("sky", "road", "car")
    for i, stem in enumerate(["a", "b"]):
        sample = dataset[i]
        assert Path(sample["path"]).stem == stem
        assert sample["image"].shape == (*expected[stem].shape, 3)
        assert np.array_equal(sample["mask"], expected[stem])  # palette indices, not colours
    png = dataset[1]["image"]
    assert np.array_equal(png, cv2.imread(str(images / "b.png"))[..., ::-1])


def test_folder_dataset_reduce_zero_label(folder):
    images, masks, expected = folder
    dataset = SegmentationFolder(images, masks, ["road", "car"], reduce_zero_label=True)
    assert np.array_equal(dataset[1]["mask"], np.where(expected["b"] == 0, 255, expected["b"] - 1))


def test_seeded_keys_make_transforms_reproducible(folder):
    images, masks, _ = folder
    pipeline = T.Compose([T.RandomCrop((8, 8), cat_max_ratio=1.0), T.RandomHorizontalFlip(0.5, keys={"mask": "hw"}), T.ToTensor()])
    dataset = SegmentationFolder(images, masks, ["sky", "road", "car"], transforms=pipeline)
    first, again = dataset[(0, (3, 1, 0))], dataset[(0, (3, 1, 0))]
    assert "rng" not in first and first["image"].shape == (3, 8, 8)
    assert all(first[k].equal(again[k]) for k in ("image", "mask"))
    crops = {dataset[(0, seed)]["image"].numpy().tobytes() for seed in range(6)}
    assert len(crops) > 1
    with pytest.raises(TypeError, match="index"):
        dataset[(0, 1, 2)]


def test_image_without_mask_and_mask_without_image(folder):
    images, masks, _ = folder
    cv2.imwrite(str(images / "c.jpg"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="c.jpg"):
        SegmentationFolder(images, masks, ["sky", "road", "car"])
    (images / "c.jpg").unlink()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(masks / "d.png")
    with pytest.raises(FileNotFoundError, match="d.png"):
        SegmentationFolder(images, masks, ["sky", "road", "car"])


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "imgs")):
        SegmentationFolder(tmp_path / "imgs", tmp_path, ["a"])


def test_unreadable_image_is_named_at_read_time(folder):
    images, masks, _ = folder
    (images / "c.jpg").write_bytes(b"\x00garbage, not a jpeg" * 10)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(masks / "c.png")
    dataset = SegmentationFolder(images, masks, ["sky", "road", "car"])
    with pytest.raises(ValueError, match="c.jpg"):
        dataset[2]


def test_unreadable_mask_is_named(folder):
    images, masks, _ = folder
    (masks / "a.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="a.png"):
        SegmentationFolder(images, masks, ["sky", "road", "car"])[0]


def test_rgb_mask_is_rejected(folder):
    images, masks, _ = folder
    Image.fromarray(np.zeros((20, 30, 3), np.uint8), mode="RGB").save(masks / "a.png")
    with pytest.raises(ValueError) as info:
        SegmentationFolder(images, masks, ["sky", "road", "car"])[0]
    assert "a.png" in str(info.value) and "'RGB'" in str(info.value) and "class indices" in str(info.value)


def test_out_of_range_label_is_named(folder):
    images, masks, _ = folder
    dataset = SegmentationFolder(images, masks, ["sky", "road"])  # b.png holds 2: one class too many
    with pytest.raises(ValueError) as info:
        dataset[1]
    assert "b.png" in str(info.value) and "label 2" in str(info.value)


def test_image_and_mask_sizes_must_agree(folder):
    images, masks, _ = folder
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(masks / "a.png")
    with pytest.raises(ValueError, match="a.png"):
        SegmentationFolder(images, masks, ["sky", "road", "car"])[0]


@pytest.mark.parametrize("kwargs, error, word", [
    ({"class_names": "sky"}, TypeError, "class_names"),
    ({"class_names": []}, ValueError, "class_names"),
    ({"class_names": ["a", "a"]}, ValueError, "duplicates"),
    ({"class_names": ["a", "b"], "ignore_index": 1}, ValueError, "ignore_index"),
    ({"class_names": ["a"], "reduce_zero_label": True, "ignore_index": 100}, ValueError, "ignore_index must be 255"),
    ({"class_names": ["a"], "mask_suffix": "png"}, ValueError, "suffixes"),
    ({"class_names": ["a"], "transforms": 3}, TypeError, "transforms"),
])
def test_folder_dataset_rejects_bad_arguments(folder, kwargs, error, word):
    images, masks, _ = folder
    with pytest.raises(error, match=word):
        SegmentationFolder(images, masks, **kwargs)


def test_truncated_image_and_mask_are_named(folder):
    images, masks, _ = folder
    dataset = SegmentationFolder(images, masks, ["sky", "road", "car"])
    image = images / "a.jpg"
    whole = image.read_bytes()
    image.write_bytes(whole[: len(whole) * 3 // 4])  # a copy cut short: libjpeg would fill the rest with grey
    with pytest.raises(ValueError, match=r"image file .*a\.jpg is truncated"):
        dataset[0]
    image.write_bytes(whole)
    mask = masks / "b.png"
    mask.write_bytes(mask.read_bytes()[:-20])
    with pytest.raises(ValueError, match=r"mask file .*b\.png is truncated"):
        dataset[1]
    assert dataset[0]["image"].shape == (20, 30, 3)
