"""The depth toy: synthetic scenes in the NYU Depth v2 (GLPDepth) layout, millimetre PNGs with Kinect-like holes."""
import cv2
import numpy as np
import pytest

from tasks.common.synthetic import make_scene
from tasks.depth.toy import write_toy_dataset

SMALL = dict(num_train=5, num_val=12, seed=3)


def scene_of(split: int, index: int, size, seed=SMALL["seed"]):
    """The scene the writer draws for (split, index): 0 = train, 1 = val (the documented seeding)."""
    return make_scene(np.random.default_rng([seed, split, index]), *size)


@pytest.fixture(scope="module")
def nyu(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("nyu"), **SMALL)


def test_nyu_layout(nyu):
    test_root = nyu / "official_splits" / "test"
    for list_name, base, code, count in (("train_list.txt", nyu, 0, 5), ("test_list.txt", test_root, 1, 12)):
        lines = (nyu / list_name).read_text().splitlines()
        assert len(lines) == count
        holes = 0
        for index, line in enumerate(lines):
            rgb, depth = line.split(" ")
            assert rgb.startswith("/") and rgb.split("/")[-1].startswith("rgb_")
            assert cv2.imread(str(base) + rgb).shape == (120, 160, 3)
            millimetres = cv2.imread(str(base) + depth, cv2.IMREAD_UNCHANGED)
            assert millimetres.dtype == np.uint16 and millimetres.shape == (120, 160)
            valid = millimetres > 0
            expected = np.round(scene_of(code, index, (120, 160)).depth * 1000)
            np.testing.assert_array_equal(millimetres[valid], expected[valid])
            holes += (~valid).mean()
        assert 0 < holes / count < 0.1
    assert {p.name for p in test_root.iterdir()} <= {"bathroom", "bedroom", "kitchen", "living_room", "office"}
