"""The segmentation toy: synthetic scenes in the ADE20K layout, read back as the task reads it."""
import cv2
import numpy as np
import pytest
from PIL import Image

from tasks.common.synthetic import make_scene
from tasks.segmentation.datasets import SegmentationFolder
from tasks.segmentation.toy import TOY_CLASSES, write_toy_dataset

SMALL = dict(num_train=5, num_val=12, seed=3)


def scene_of(split: int, index: int, size, seed=SMALL["seed"]):
    """The scene the writer draws for (split, index): 0 = train, 1 = val (the documented seeding)."""
    return make_scene(np.random.default_rng([seed, split, index]), *size)


@pytest.fixture(scope="module")
def ade(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("ade"), **SMALL)


def test_ade20k_layout(ade):
    assert ade.name == "ADEChallengeData2016"
    for split, code, folder, count in (("train", 0, "training", 5), ("val", 1, "validation", 12)):
        images = sorted((ade / "images" / folder).glob("*.jpg"))
        assert [p.name for p in images] == [f"ADE_{split}_{i:08d}.jpg" for i in range(1, count + 1)]
        for index, path in enumerate(images):
            image = cv2.imread(str(path))
            annotation = Image.open(ade / "annotations" / folder / path.name.replace(".jpg", ".png"))
            assert image.shape == (128, 128, 3) and annotation.mode == "L"
            annotation = np.asarray(annotation)
            assert (annotation[[0, -1]] == 0).all() and (annotation[:, [0, -1]] == 0).all()
            expected = scene_of(code, index, (128, 128))
            np.testing.assert_array_equal(annotation[1:-1, 1:-1], expected.labels[1:-1, 1:-1] + 1)
            assert np.abs(image[..., ::-1].astype(int) - expected.image).mean() < 8  # JPEG q95, 4:2:0 chroma
    masks = [np.asarray(Image.open(p)) for p in (ade / "annotations" / "validation").glob("*.png")]
    assert set(np.unique(np.stack(masks))) == {0, 1, 2, 3, 4}  # every class in the val split




def test_the_folder_dataset_reads_the_toy(ade):
    dataset = SegmentationFolder(ade / "images" / "validation", ade / "annotations" / "validation", TOY_CLASSES,
                                 reduce_zero_label=True)
    sample = dataset[0]
    expected = scene_of(1, 0, (128, 128)).labels
    assert (sample["mask"][0] == 255).all() and np.array_equal(sample["mask"][1:-1, 1:-1], expected[1:-1, 1:-1])
