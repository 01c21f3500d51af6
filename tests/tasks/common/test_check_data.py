"""The dataset check on small layouts in temporary folders: the official layouts (written by the toy writers),
the user's folders, and broken copies of each (missing, unpaired, truncated, metres, out-of-range labels)."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import tasks
from tasks.common.check_data import check_data, preflight
from tasks.common.config import apply_options, load_config
from tasks.depth.toy import write_toy_dataset as write_nyu
from tasks.detection.toy import write_toy_dataset as write_coco
from tasks.classification.presets import ImageNetData
from tasks.segmentation.presets import FolderData
from tasks.segmentation.toy import write_toy_dataset as write_ade

CONFIGS = Path(__file__).resolve().parents[3] / "configs"
SMALL = dict(num_train=6, num_val=3, size=(64, 64))


def _cfg(name, root):
    options = [f"data.root={root}", "model.backbone_weights=None"]
    if name == "glpn_pvt_b4_nyu":  # the toy writer puts GLPDepth's list files inside nyu_depth_v2/
        options += ["data.train_list=None", "data.test_list=None"]
    return apply_options(load_config(CONFIGS / f"{name}.py"), options)


def _row(report, split):
    return next(line for line in report.table().splitlines() if line.startswith(split + " "))


def test_ade20k_counts_against_the_official_release(tmp_path):
    write_ade(tmp_path, **SMALL)
    report = check_data(_cfg("segformer_pvt_b2_ade", tmp_path), samples=4)
    assert report.ok, report.table()
    assert report.dataset == "ADE20K (SceneParse150)"
    assert [(s.found, s.official, s.read) for s in report.splits] == [(6, 20_210, 4), (3, 2_000, 3)]
    assert "6,  the official release has 20,210" not in report.table()  # one number per column
    assert "warning (train): 6 samples, the official release has 20,210" in report.table()
    assert "labels 0-3 after reduce_zero_label (4 of 150 classes seen)" in _row(report, "train")
    assert report.table().endswith("result: OK")


def test_ade20k_broken_layouts(tmp_path):
    root = write_ade(tmp_path, **SMALL)
    (root / "annotations" / "validation" / "ADE_val_00000002.png").unlink()  # an image without its mask
    train_image = root / "images" / "training" / "ADE_train_00000003.jpg"
    train_image.write_bytes(train_image.read_bytes()[:-200])  # a truncated JPEG
    bad_mask = root / "annotations" / "training" / "ADE_train_00000005.png"
    cv2.imwrite(str(bad_mask), np.full((64, 64), 200, np.uint8))  # labels above 150
    report = check_data(_cfg("segformer_pvt_b2_ade", tmp_path), samples=None)
    assert not report.ok
    table = report.table()
    assert "problem (val): image" in table and "ADE_val_00000002.jpg has no mask" in table
    assert "unreadable (train):" in table and "ADE_train_00000003.jpg" in table
    assert "ADE_train_00000005.png holds label 199 (after reduce_zero_label)" in table
    assert [len(s.failed) for s in report.splits] == [2, 0] and table.endswith("result: BROKEN (3 problems)")


def test_nyu_depth_in_metres_is_caught(tmp_path):
    base = write_nyu(tmp_path, **SMALL)
    report = check_data(_cfg("glpn_pvt_b4_nyu", tmp_path), samples=None)
    assert report.ok and [s.official for s in report.splits] == [24_231, 654]
    assert " m, " in _row(report, "train") and "depth" in _row(report, "val")
    depth = base / (base / "test_list.txt").read_text().split()[1].lstrip("/")
    depth = base / "official_splits" / "test" / depth.relative_to(base)
    metres = np.round(cv2.imread(str(depth), cv2.IMREAD_UNCHANGED) / 1000).astype(np.uint16)
    cv2.imwrite(str(depth), metres)
    report = check_data(_cfg("glpn_pvt_b4_nyu", tmp_path), samples=None)
    assert not report.ok and "looks like metres" in report.splits[1].failed[0]


def test_nyu_missing_list_file(tmp_path):
    base = write_nyu(tmp_path, **SMALL)
    (base / "test_list.txt").unlink()
    report = check_data(_cfg("glpn_pvt_b4_nyu", tmp_path), samples=0)
    assert not report.ok and report.splits[0].problems == [] and "list file" in report.splits[1].problems[0]


def test_coco_images_missing_from_disk(tmp_path):
    write_coco(tmp_path, **SMALL)
    cfg = _cfg("deformable_detr_pvt_b2_coco", tmp_path)
    report = check_data(cfg, samples=0)
    assert report.ok and report.dataset == "COCO 2017" and [s.official for s in report.splits] == [118_287, 5_000]
    assert [s.read for s in report.splits] == [0, 0]  # layout only
    (tmp_path / "val2017" / "000000000008.jpg").unlink()
    report = check_data(cfg, samples=0)
    assert report.splits[1].problems == [
        f"1 of the 3 images in instances_val2017.json are missing from {tmp_path / 'val2017'}: 000000000008.jpg"
    ]
    with pytest.raises(ValueError, match=r"COCO 2017 val: 1 of the 3 images .* missing .*tools/check_data.py"):
        preflight(cfg, *[tasks.get_task(cfg).train_dataset(), tasks.get_task(cfg).val_dataset()])


def test_user_coco_json_has_no_official_counts(tmp_path):
    write_coco(tmp_path, **SMALL)
    (tmp_path / "annotations" / "instances_val2017.json").rename(tmp_path / "annotations" / "mine.json")
    cfg = _cfg("deformable_detr_pvt_b2_coco", tmp_path)
    cfg = apply_options(cfg, ["data.val_ann=annotations/mine.json"])
    report = check_data(cfg, samples=2)
    assert report.ok and report.dataset == "CocoData (detection)" and report.splits[1].official is None
    assert "boxes per image" in _row(report, "val")


def test_preflight_returns_count_warnings(tmp_path):
    write_ade(tmp_path, **SMALL)
    cfg = _cfg("segformer_pvt_b2_ade", tmp_path)
    task = tasks.get_task(cfg)
    warnings = preflight(cfg, task.train_dataset(), task.val_dataset())
    assert warnings == [
        "ADE20K (SceneParse150) train: 6 samples, the official release has 20,210 (incomplete download?)",
        "ADE20K (SceneParse150) val: 3 samples, the official release has 2,000 (incomplete download?)",
    ]


def test_user_folders_pairing(tmp_path):
    root = write_ade(tmp_path, **SMALL)
    cfg = _cfg("segformer_pvt_b0_toy", tmp_path / "unused")
    cfg.data = FolderData(
        train_images=str(root / "images" / "training"), train_masks=str(root / "annotations" / "training"),
        val_images=str(root / "images" / "validation"), val_masks=str(root / "annotations" / "validation"),
        class_names=("background", "a", "b", "c"), reduce_zero_label=True,
    )
    report = check_data(cfg, samples=2)
    assert report.ok and [(s.found, s.official) for s in report.splits] == [(6, None), (3, None)]
    (root / "images" / "training" / "ADE_train_00000001.jpg").unlink()
    report = check_data(cfg, samples=2)
    assert not report.ok and "mask" in report.splits[0].problems[0] and "has no image" in report.splits[0].problems[0]


@pytest.mark.parametrize("config", ["segformer_pvt_b0_toy", "glpn_pvt_b0_toy", "deformable_detr_pvt_b0_toy",
                                    "classifier_pvt_b0_toy"])
def test_toy_configs_check_clean(config, tmp_path):
    cfg = load_config(CONFIGS / f"{config}.py")
    if cfg.task not in tasks.list_tasks():
        pytest.skip(f"task {cfg.task!r} is not registered")
    apply_options(cfg, [f"data.root={tmp_path}", "data.num_train=4", "data.num_val=2"])
    report = check_data(cfg, samples=None)  # writes the synthetic data on first use, like training
    assert report.ok, report.table()
    assert all(s.found and s.read == s.found and not s.warnings for s in report.splits)


def test_empty_annotation_file_is_a_layout_problem(tmp_path):
    write_coco(tmp_path, **SMALL)
    (tmp_path / "annotations" / "instances_train2017.json").write_text("")
    report = check_data(_cfg("deformable_detr_pvt_b2_coco", tmp_path), samples=1)
    assert not report.ok and "is empty" in report.splits[0].problems[0] and report.splits[1].read == 1
    assert json.loads((tmp_path / "annotations" / "instances_val2017.json").read_text())["images"]


class _ClassFolders:
    """A stand-in for a folder-per-class dataset: its length and its class folder names."""

    def __init__(self, n, folders):
        self.n, self.folder_names = n, tuple(folders)

    def __len__(self):
        return self.n


def test_imagenet_counts_and_class_folders():
    from types import SimpleNamespace

    from tasks.common.check_data import check_layout

    cfg = SimpleNamespace(task="classification", data=ImageNetData())
    wnids = [f"n{i:08d}" for i in range(1000)]
    report = check_layout(cfg, {"train": _ClassFolders(1_281_167, wnids), "val": _ClassFolders(50_000, wnids)})
    assert report.ok and not any(s.warnings for s in report.splits) and report.dataset == "ImageNet-1K (ILSVRC-2012)"
    report = check_layout(cfg, {"train": _ClassFolders(1_000, wnids[:100]), "val": _ClassFolders(500, wnids[1:101])})
    assert report.splits[0].warnings == [
        "1,000 samples, the official release has 1,281,167 (incomplete download?)",
        "100 class folders, the official release has 1,000",
    ]
    assert report.splits[1].problems == [
        "the splits have different class folders (100 train, 100 val; in one only: n00000000, n00000100), "
        "so the labels would not agree"
    ]


def test_imagenet_config_on_an_imagenet_layout(tmp_path):
    from tasks.classification.toy import write_toy_dataset

    write_toy_dataset(tmp_path, num_train=3, num_val=2, size=(32, 32))
    cfg = _cfg("classifier_pvt_b2_imagenet", tmp_path)
    report = check_data(cfg, samples=None)
    assert report.ok and report.dataset == "ImageNet-1K (ILSVRC-2012)"
    assert [(s.found, s.official) for s in report.splits] == [(18, 1_281_167), (12, 50_000)]
    assert "6 class folders, the official release has 1,000" in report.splits[0].warnings
    assert "6 of 6 classes seen" in _row(report, "val")
    victim = sorted((tmp_path / "val").iterdir())[0]
    for image in victim.iterdir():
        image.unlink()
    victim.rmdir()
    report = check_data(cfg, samples=0)
    assert not report.ok and f"in one only: {victim.name}" in report.splits[1].problems[0]
