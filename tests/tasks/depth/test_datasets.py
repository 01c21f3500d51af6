"""NYUDepthV2 on the synthetic NYU layout (tasks.depth.toy), and the errors a user meets first."""
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from tasks.depth import transforms as T
from tasks.depth.datasets import NYUDepthV2
from tasks.depth.toy import ensure_toy_dataset


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    """The folder holding ``nyu_depth_v2/`` (5 train, 3 test pairs at 120x160); read-only for the tests."""
    root = tmp_path_factory.mktemp("nyu_toy")
    ensure_toy_dataset(root, num_train=5, num_val=3)
    return root


@pytest.fixture
def copy(toy, tmp_path) -> Path:
    """A private copy of the toy to break."""
    shutil.copytree(toy / "nyu_depth_v2", tmp_path / "nyu_depth_v2")
    return tmp_path


def test_train_and_test_samples(toy):
    for split, count in (("train", 5), ("test", 3)):
        dataset = NYUDepthV2(toy, split=split)
        assert len(dataset) == count
        sample = dataset[0]
        assert set(sample) == {"image", "depth", "path"}
        assert sample["image"].dtype == np.uint8 and sample["image"].shape == (120, 160, 3)
        assert sample["depth"].dtype == np.float32 and sample["depth"].shape == (120, 160)
        assert Path(sample["path"]).name.startswith("rgb_")
    assert "official_splits" in NYUDepthV2(toy, split="test")[2]["path"]


def test_root_may_be_the_nyu_depth_v2_folder(toy):
    assert NYUDepthV2(toy / "nyu_depth_v2").pairs == NYUDepthV2(toy).pairs


def test_depth_png_millimetres_become_metres(toy):
    dataset = NYUDepthV2(toy, split="train")
    for index in range(len(dataset)):
        _, depth_path = dataset.pairs[index]
        raw = cv2.imread(str(depth_path), cv2.IMREAD_UNCHANGED)
        assert raw.dtype == np.uint16
        depth = dataset[index]["depth"]
        np.testing.assert_array_equal(depth, raw.astype(np.float32) / np.float32(1000))
        assert (depth == 0).any() and 1.0 <= depth[depth > 0].min() and depth.max() <= 8.0  # holes; 1..8 m scenes


def test_explicit_list_file_with_focal_column(toy, tmp_path):
    # BTS lists carry a third column (focal length); blank lines are ignored.
    lines = (toy / "nyu_depth_v2" / "test_list.txt").read_text().splitlines()
    custom = tmp_path / "my_list.txt"
    custom.write_text(f"{lines[2]} 518.8579\n\n{lines[0]} 518.8579\n")
    dataset = NYUDepthV2(toy, split="test", list_file=custom)
    assert len(dataset) == 2 and dataset[0]["path"] == NYUDepthV2(toy, split="test")[2]["path"]


def test_seeded_keys_make_transforms_reproducible(toy):
    pipeline = T.Compose([T.RandomCrop(64, 96), T.RandomHorizontalFlip(keys={"depth": "hw"}), T.RandomBrightnessContrast(p=1.0)])
    dataset = NYUDepthV2(toy, split="train", transforms=pipeline)
    a, b, c = dataset[(1, (0, 3, 1))], dataset[(1, (0, 3, 1))], dataset[(1, (0, 4, 1))]
    assert "rng" not in a and a["image"].shape == (64, 96, 3)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["depth"], b["depth"])
    assert not np.array_equal(a["image"], c["image"])


def test_missing_root_names_the_expected_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist.*nyu_depth_v2/<scene>/rgb_XXXXX\.jpg"):
        NYUDepthV2(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="official_splits/test"):
        NYUDepthV2(tmp_path, split="test")


def test_missing_list_file_says_where_glpdepth_keeps_it(copy):
    (copy / "nyu_depth_v2" / "train_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match="train_list.txt.*list_file="):
        NYUDepthV2(copy)


def test_missing_listed_file_is_named(copy):
    dataset = NYUDepthV2(copy)
    image_path, depth_path = dataset.pairs[3]
    depth_path.unlink()
    with pytest.raises(FileNotFoundError, match=rf"{depth_path.name} is listed in .*train_list.txt:4"):
        NYUDepthV2(copy)
    image_path.unlink()
    with pytest.raises(FileNotFoundError, match=image_path.name):
        NYUDepthV2(copy)


def test_malformed_list_line_is_named(copy):
    (copy / "nyu_depth_v2" / "train_list.txt").write_text("/a/rgb_00000.jpg\n")
    with pytest.raises(ValueError, match=r"train_list.txt:1: expected 'image depth \[focal\]'"):
        NYUDepthV2(copy)


@pytest.mark.parametrize("array, words", [
    (np.full((120, 160), 2000 // 8, np.uint8), "uint8 with 1 channel"),  # an 8-bit PNG (e.g. a visualisation)
    (np.full((120, 160, 3), 2000, np.uint16), "uint16 with 3 channel"),  # 16-bit, but RGB
])
def test_depth_png_must_be_uint16_single_channel(copy, array, words):
    dataset = NYUDepthV2(copy)
    depth_path = dataset.pairs[1][1]
    cv2.imwrite(str(depth_path), array)
    with pytest.raises(ValueError, match=rf"{depth_path.name} is {words}.*uint16 single-channel"):
        dataset[1]
    dataset[0]  # the others still read


def test_all_invalid_depth_is_named(copy):
    dataset = NYUDepthV2(copy)
    depth_path = dataset.pairs[2][1]
    cv2.imwrite(str(depth_path), np.zeros((120, 160), np.uint16))
    with pytest.raises(ValueError, match=rf"{depth_path.name} has no valid pixel"):
        dataset[2]


def test_image_and_depth_sizes_must_agree(copy):
    dataset = NYUDepthV2(copy)
    depth_path = dataset.pairs[0][1]
    cv2.imwrite(str(depth_path), np.full((60, 80), 3000, np.uint16))
    with pytest.raises(ValueError, match=rf"is \(120, 160\) but its depth .*{depth_path.name} is \(60, 80\)"):
        dataset[0]


def test_unreadable_image_is_named(copy):
    dataset = NYUDepthV2(copy)
    image_path = dataset.pairs[0][0]
    image_path.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=rf"cannot read image file .*{image_path.name}"):
        dataset[0]


@pytest.mark.parametrize("kwargs, error, word", [
    ({"split": "val"}, ValueError, "'train' or 'test'"),
    ({"transforms": "flip"}, TypeError, "callable"),
])
def test_rejects_bad_arguments(toy, kwargs, error, word):
    with pytest.raises(error, match=word):
        NYUDepthV2(toy, **kwargs)


def test_depth_stored_in_metres_is_refused(copy):
    """Integer metres (a 1-8 m scene stored as 1..8) would read as a scene under 1 cm deep."""
    dataset = NYUDepthV2(copy)
    depth_path = dataset.pairs[1][1]
    millimetres = cv2.imread(str(depth_path), cv2.IMREAD_UNCHANGED)
    metres = np.round(millimetres / 1000).astype(np.uint16)
    cv2.imwrite(str(depth_path), metres)
    with pytest.raises(ValueError, match=rf"{depth_path.name} holds values up to {metres.max()}, i.e. a farthest "
                                         r"point at 0.00\d+ m; it looks like metres, not metres x 1000"):
        dataset[1]
    dataset[0]  # the others still read
    near = np.where(millimetres > 0, 450, 0).astype(np.uint16)  # a close-up 45 cm away is real data
    cv2.imwrite(str(depth_path), near)
    assert dataset[1]["depth"].max() == np.float32(0.45)


def test_float_depth_is_refused_with_a_hint(copy):
    dataset = NYUDepthV2(copy)
    depth_path = dataset.pairs[1][1]
    tiff = depth_path.with_suffix(".tiff")
    cv2.imwrite(str(tiff), np.full((120, 160), 2.5, np.float32))
    depth_path.write_bytes(tiff.read_bytes())  # float metres under the listed name
    with pytest.raises(ValueError, match=rf"{depth_path.name} is float32 with 1 channel.*look like metres"):
        dataset[1]


@pytest.mark.parametrize("which, kind", [(0, "image file"), (1, "depth file")])
def test_truncated_files_are_named(copy, which, kind):
    dataset = NYUDepthV2(copy)
    path = dataset.pairs[2][which]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"{kind} .*{path.name} is truncated"):
        dataset[2]
