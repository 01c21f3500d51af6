"""The panoptic picture: segments blended in their colours (things one each, stuff by class), VOID clear, names."""
import cv2
import numpy as np
import torch

from tasks.panoptic.visualize import _name, interior_point, render, save_prediction_png, segment_colours

SEGMENTS = [{"id": 4, "category_id": 190, "isthing": False, "score": 0.8, "label": 5},
            {"id": 9, "category_id": 1, "isthing": True, "score": 0.9, "label": 0},
            {"id": 12, "category_id": 1, "isthing": True, "score": 0.7, "label": 0},
            {"id": 13, "category_id": 190, "isthing": False, "score": 0.6, "label": 5}]
NAMES = ("circle", "square", "triangle", "sand", "sky", "floor")


def test_colours_things_apart_stuff_by_class():
    colours = segment_colours(SEGMENTS)
    assert colours[9] != colours[12]  # two instances of one class
    assert colours[4] == colours[13]  # one stuff class
    assert len({colours[4], colours[9], colours[12]}) == 3 and (255, 255, 255) not in colours.values()


def test_render_blends_segments_and_leaves_void_clear():
    image = np.full((20, 30, 3), 100, np.uint8)
    panoptic = np.zeros((20, 30), np.int64)
    panoptic[:, :10], panoptic[5:15, 12:20] = 4, 9
    out = render(image, panoptic, {4: (200, 0, 0), 9: (0, 200, 0)}, alpha=0.5)
    assert (out[2, 2] == [150, 50, 50]).all() and (out[8, 15] == [50, 150, 50]).all()
    assert (out[0, 25] == 100).all()  # VOID
    assert (out[8, 12] == 255).all() and (out[2, 10] == 255).all()  # outlines


def test_names_from_labels_category_ids_or_mapping():
    assert _name(SEGMENTS[0], NAMES, None) == "floor"
    plain = {"id": 1, "category_id": 187}
    assert _name(plain, NAMES, (1, 3, 7, 154, 187, 190)) == "sky"
    assert _name(plain, {187: "sky"}, None) == "sky"
    assert _name(plain, None, None) == "category 187" == _name(plain, NAMES, None)


def test_interior_point_is_inside_a_concave_mask():
    mask = np.zeros((30, 30), bool)
    mask[0:30, 0:6] = mask[24:30, 0:30] = True  # an L: its bounding-box centre is outside
    x, y = interior_point(mask)
    assert mask[y, x]


def test_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    panoptic = np.zeros((48, 64), np.int32)
    panoptic[:20], panoptic[20:, :30], panoptic[25:40, 35:50], panoptic[25:40, 50:60] = 4, 13, 9, 12
    prediction = {"panoptic": torch.from_numpy(panoptic), "segments": SEGMENTS + [{"id": 77, "category_id": 3}]}
    save_prediction_png(tmp_path / "p.png", image, prediction, class_names=NAMES)
    picture = cv2.imread(str(tmp_path / "p.png"))
    assert picture is not None and picture.shape[2] == 3 and picture.shape[1] > picture.shape[0]
