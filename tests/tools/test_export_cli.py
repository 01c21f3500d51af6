"""tools/export.py: a checkpoint in, a checked ONNX file out; one `error:` line and exit code 2 otherwise."""
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime", reason="needs the export extra")
pytest.importorskip("onnxscript", reason="needs the export extra")

from tests.tasks.common.test_export import build  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import export as cli  # noqa: E402

from tasks.common import export as ex  # noqa: E402


def _checkpoint(model, path):
    torch.save({"model": model.state_dict(), "meta": {"task": model.task, "model": model.config}}, path)
    return str(path)


def test_exports_a_checkpoint(tmp_path, capsys):
    model = build("depth")
    out = tmp_path / "glpn.onnx"
    assert cli.main([_checkpoint(model, tmp_path / "best.pth"), str(out), "--height", "96", "--width", "128"]) == 0
    printed = capsys.readouterr().out
    assert "depth -> predicted_depth; ONNX Runtime matches PyTorch at 1x3x133x101, 2x3x73x179" in printed
    info = ex.read_metadata(out)
    assert info["task"] == "depth" and info["config"]["decoder_dim"] == 16


@pytest.mark.slow
def test_no_grid_sample_detector(tmp_path, capsys):
    import onnx

    model = build("detection_refine")
    out = tmp_path / "detr.onnx"
    assert cli.main([_checkpoint(model, tmp_path / "d.pth"), str(out), "--height", "96", "--width", "128",
                     "--no-grid-sample"]) == 0
    assert "GridSample" not in {n.op_type for n in onnx.load(out).graph.node}
    assert ex.read_metadata(out)["class_names"] == list(model.class_names)


@pytest.mark.slow
def test_bare_backbone(tmp_path, capsys):
    from backbones import build_backbone

    torch.save(build_backbone("pvt_v2_b0").state_dict(), tmp_path / "pvt.pth")
    out = tmp_path / "pvt.onnx"
    assert cli.main([str(tmp_path / "pvt.pth"), str(out), "--backbone", "pvt_v2_b0", "--height", "96", "--width", "128"]) == 0
    assert "backbone -> stage1, stage2, stage3, stage4" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["missing.pth", "x.onnx"], "missing.pth"),
    (["{ckpt}", "x.onnx", "--height", "96"], "give both --height and --width"),
    (["{ckpt}", "x.onnx", "--height", "40", "--width", "96"], "height must be an int in [65, 8192], got 40"),
    (["{ckpt}", "x.txt", "--height", "96", "--width", "96"], "OUTPUT must end in .onnx"),
])
def test_errors_are_one_line(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    ckpt = _checkpoint(build("depth"), tmp_path / "best.pth")
    assert cli.main([a.format(ckpt=ckpt) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_missing_onnxruntime_names_the_extra(tmp_path, capsys, monkeypatch):
    real = ex.importlib.util.find_spec
    monkeypatch.setattr(ex.importlib.util, "find_spec", lambda name: None if name == "onnxruntime" else real(name))
    assert cli.main([str(tmp_path / "best.pth"), str(tmp_path / "x.onnx")]) == 2
    assert capsys.readouterr().err.strip() == 'error: ONNX export needs onnxruntime: pip install "densepred[export]"'
