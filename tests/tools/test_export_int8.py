"""tools/export.py --int8 and atomic exports: an INT8 file that lists what stays float and passes its task's
agreement check, evaluated by tools/test.py; one `error:` line and nothing partial left for each bad input
(--int8 without a config, another task's config, a calibration set smaller than N, a read-only folder, a file
below the agreement bar, a full disk); a failed re-export leaves the earlier file byte-identical."""
import dataclasses
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime", reason="needs the export extra")
pytest.importorskip("onnxscript", reason="needs the export extra")

from tasks.common import export as ex  # noqa: E402
from tasks.common import registry  # noqa: E402
from tests.tasks.common.test_export import build  # noqa: E402
from tests.tools.test_onnx_eval import ROOT, evaluate, toy  # noqa: E402

sys.path.insert(0, str(ROOT / "tools"))
import export as cli  # noqa: E402

SEG = str(ROOT / "configs" / "segformer_pvt_b0_toy.py")


def one_line(capsys, *fragments) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, err
    return err


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


@pytest.fixture
def seg_toy(tmp_path):
    return toy("segformer_pvt_b0_toy", tmp_path)


def test_int8_needs_a_config(tmp_path, capsys):
    assert cli.main(["missing.pth", str(tmp_path / "m.onnx"), "--int8"]) == 2
    one_line(capsys, "--int8 needs --config CONFIG")
    assert cli.main(["missing.pth", str(tmp_path / "m.onnx"), "--calib-images", "8"]) == 2
    one_line(capsys, "go with --int8")


def test_config_of_another_task_and_too_few_calibration_images(seg_toy, tmp_path, capsys):
    options, checkpoint = seg_toy
    glpn = str(ROOT / "configs" / "glpn_pvt_b0_toy.py")
    out = tmp_path / "m.onnx"
    assert cli.main([str(checkpoint), str(out), "--int8", "--config", glpn, "--cfg-options", f"data.root={tmp_path}"]) == 2
    one_line(capsys, "is a depth config but the checkpoint is a segmentation model")
    assert cli.main([str(checkpoint), str(out), "--int8", "--config", SEG, "--cfg-options", *options]) == 2
    one_line(capsys, "--calib-images 64: the config's training set has only 8 images")
    assert not out.exists() and not leftovers(tmp_path)


def _mount_tmpfs(folder: Path, options: str) -> bool:
    """A real small or read-only file system where the machine lets us mount one (root on Linux)."""
    if sys.platform != "linux" or os.geteuid() != 0:
        return False
    folder.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True).returncode == 0


@pytest.fixture
def mounted(tmp_path):
    folders = []

    def mount(name: str, options: str) -> Path | None:
        folder = tmp_path / name
        if not _mount_tmpfs(folder, options):
            return None
        folders.append(folder)
        return folder

    yield mount
    for folder in folders:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_read_only_folder_is_one_line_before_any_work(mounted, tmp_path, capsys):
    folder = mounted("ro", "ro,size=64k")
    if folder is None:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        if os.access(folder, os.W_OK):
            pytest.skip("cannot make a read-only folder here")
    assert cli.main(["missing.pth", str(folder / "m.onnx")]) == 1  # the checkpoint is not even read
    one_line(capsys, f"cannot write {folder / 'm.onnx'}", "Read-only file system" if os.geteuid() == 0 else "ermission")
    assert not list(folder.iterdir())


def test_failed_re_export_leaves_the_earlier_file_byte_identical(tmp_path, monkeypatch):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"an earlier, good export")

    def disagree(path, model, sizes, **kwargs):
        raise ex.ExportError(f"{kwargs['name']}: ONNX Runtime differs from PyTorch")

    monkeypatch.setattr(ex, "verify", disagree)
    with pytest.raises(ex.ExportError, match=str(out)):
        ex.export_onnx(build("backbone"), out, height=96, width=128)
    assert out.read_bytes() == b"an earlier, good export" and leftovers(tmp_path) == []


def test_full_disk_leaves_no_file_and_names_it(seg_toy, mounted, tmp_path, monkeypatch, capsys):
    folder = mounted("full", "size=32k")  # a real full disk: the tiny model's file needs ~10x that
    if folder is None:  # simulated: the save fails as it does on a full disk, after writing part of the file
        folder = tmp_path

        def no_space(self, path, **kwargs):
            Path(path).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        import torch.onnx

        monkeypatch.setattr(torch.onnx.ONNXProgram, "save", no_space)
    out = folder / "model.onnx"
    assert cli.main([str(seg_toy[1]), str(out), "--height", "96", "--width", "128"]) == 1
    one_line(capsys, f"cannot write {out}: No space left on device", "(nothing was written)")
    assert not out.exists() and leftovers(folder) == []


@pytest.mark.slow
def test_int8_export_checked_listed_and_evaluated(seg_toy, tmp_path, capsys, monkeypatch):
    import onnx

    options, checkpoint = seg_toy
    out = tmp_path / "int8.onnx"
    args = [str(checkpoint), str(out), "--height", "96", "--width", "128", "--int8", "--config", SEG,
            "--calib-images", "8", "--cfg-options", *options]
    assert cli.main(args) == 0
    assert "INT8 (QDQ, per-channel weights), calibrated on 8 training images" in capsys.readouterr().out
    info = ex.read_metadata(out)
    assert info["task"] == "segmentation" and info["int8"]["float_ops"] == ["Softmax", "LayerNormalization"]
    assert info["int8_check"]["metric"] == "pixel agreement" and info["int8_check"]["value"] >= 0.95
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    metrics = evaluate("segformer_pvt_b0_toy", out, options, tmp_path / "eval")
    assert metrics["onnx"] == str(out) and "mIoU" in metrics

    # below the bar: not written, and the earlier file is unchanged
    before = out.read_bytes()
    spec = registry.get_task_spec("segmentation")
    monkeypatch.setitem(registry._SPECS, "segmentation", dataclasses.replace(spec, int8=dataclasses.replace(spec.int8, bar=1.01)))
    assert cli.main(args) == 2
    one_line(capsys, "pixel agreement vs fp32 on 6 held-out images", "below the bar 1.01", "not written")
    assert out.read_bytes() == before and leftovers(tmp_path) == []
    assert json.loads(json.dumps(info))["int8"]["calibration_images"] == 8
