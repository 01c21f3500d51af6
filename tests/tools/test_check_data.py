"""tools/check_data.py: a table and exit code 0 for clean data, 1 for broken data, 2 for a bad config or argument."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "check_data.py"
TOY = ROOT / "configs" / "segformer_pvt_b0_toy.py"


def _run(*args):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, timeout=600)


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
