"""tools/check_data.py: a table and exit code 0 for clean data, 1 for broken data, 2 for a bad config or argument."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "check_data.py"
TOY = ROOT / "configs" / "segformer_pvt_b0_toy.py"


def _run(*args):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # this checkout's packages


def test_clean_then_broken(tmp_path):
    options = ["--cfg-options", f"data.root={tmp_path}", "data.num_train=4", "data.num_val=2"]
    clean = _run(TOY, "--samples", "all", *options)
    assert clean.returncode == 0, clean.stderr
    lines = clean.stdout.splitlines()
    assert lines[0] == f"dataset: ToyData (segmentation) at {tmp_path}"
    assert lines[1].split() == ["split", "found", "official", "samples", "read", "failed", "sizes", "and", "targets"]
    assert lines[2].split()[:5] == ["train", "4", "-", "4", "0"] and lines[-1] == "result: OK"
    mask = next((tmp_path / "ADEChallengeData2016" / "annotations" / "validation").glob("*.png"))
    mask.write_bytes(mask.read_bytes()[:50])  # a truncated PNG
    broken = _run(TOY, *options)
    assert broken.returncode == 1, broken.stdout
    assert "unreadable (val): " in broken.stdout and mask.name in broken.stdout
    assert broken.stdout.splitlines()[-1] == "result: BROKEN (1 problem)"


def test_bad_config_or_argument_is_exit_2(tmp_path):
    bad_key = _run(TOY, "--cfg-options", "data.nope=1")
    assert bad_key.returncode == 2 and bad_key.stderr.startswith("error: ") and "Traceback" not in bad_key.stderr
    bad_samples = _run(TOY, "--samples", "some")
    assert bad_samples.returncode == 2 and "expected a number >= 0 or 'all', got 'some'" in bad_samples.stderr


def test_train_stops_before_the_first_step_on_a_broken_layout(tmp_path):
    from tasks.detection.toy import write_toy_dataset

    write_toy_dataset(tmp_path / "coco", num_train=4, num_val=2, size=(64, 64))
    (tmp_path / "coco" / "val2017" / "000000000005.jpg").unlink()
    train = [sys.executable, str(ROOT / "tools" / "train.py"), str(ROOT / "configs" / "deformable_detr_pvt_b2_coco.py"),
             "--work-dir", str(tmp_path / "work"), "--cfg-options", f"data.root={tmp_path / 'coco'}",
             "model.backbone_weights=None", "data.num_workers=0"]
    result = subprocess.run(train, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.startswith("error: COCO 2017 val: 1 of the 2 images in instances_val2017.json are missing")
    assert not (tmp_path / "work" / "last.pth").exists()


def test_panoptic_ground_truth_faults_are_found(tmp_path):
    from tests.tasks.panoptic.test_check import CONFIG, break_toy

    result = _run(CONFIG, "--samples", "all", "--cfg-options", *break_toy(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert any(line.startswith("problem (val): 1 of the 4 images in panoptic_val2017.json have no entry") for line in lines)
    assert any(line.startswith("wrong (val): 000000000004.png (image 4): PNG ids 4242 (4 pixels)") for line in lines)
    assert "wrong (val): 000000000005.png (image 5): segments_info ids 4243 are not in the PNG" in lines
    assert lines[-1].startswith("result: BROKEN")
