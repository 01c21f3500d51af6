"""tools/test.py on an exported ONNX file: the checkpoint's metrics (to 3 decimals: ONNX Runtime is within 1e-4 of
PyTorch on the outputs, far below what moves an argmax or a metric's third decimal on these toys), the same table
and JSON naming the file and provider; one `error:` line for another task's file, a file without our metadata
and a truncated file (also in tools/infer.py --onnx).

Tiny toy models (random seeded weights, one block per stage) on a few toy images: export is the slow part, so
the default run covers segmentation, `-m slow` the other four tasks."""
import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime", reason="needs the export extra")
pytest.importorskip("onnxscript", reason="needs the export extra")

from tasks.common.cli import config_and_task  # noqa: E402
from tests.utils import perturb  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import export as export_cli  # noqa: E402
import test as test_cli  # noqa: E402

TINY = "{'depths': [1, 1, 1, 1], 'hidden_sizes': [16, 32, 32, 64], 'num_attention_heads': [1, 2, 2, 4]}"
# config -> (main metric, overrides that keep the model and data tiny)
TOYS = {
    "segformer_pvt_b0_toy": ("mIoU", ["model.decoder_dim=32"]),
    "classifier_pvt_b0_toy": ("top1", ["data.val_batch_size=4"]),
    "glpn_pvt_b0_toy": ("abs_rel", ["model.decoder_dim=16"]),
    "deformable_detr_pvt_b0_toy": ("AP", ["model.hidden_dim=32", "model.enc_layers=1", "model.dec_layers=2",
                                          "model.dim_feedforward=32", "model.num_queries=20", "data.val_batch_size=3"]),
    "panoptic_segformer_pvt_b0_toy": ("PQ", []),
}


def toy(name: str, folder: Path) -> tuple[list[str], Path]:
    """(--cfg-options, checkpoint) of a tiny random model of the toy config ``name`` on a few toy images."""
    options = [f"data.root={folder / 'data'}", "data.num_train=8", "data.num_val=6", "data.num_workers=0",
               f"model.backbone_args={TINY}", *TOYS[name][1]]
    cfg, task = config_and_task(str(ROOT / "configs" / f"{name}.py"), options)
    torch.manual_seed(0)
    model = perturb(task.build_model())
    path = folder / "model.pth"
    torch.save({"model": model.state_dict(), "meta": {"task": cfg.task, "model": model.config}}, path)
    return options, path


def evaluate(name: str, model: Path, options: list[str], out: Path) -> dict:
    assert test_cli.main([str(ROOT / "configs" / f"{name}.py"), str(model), "--work-dir", str(out),
                          "--cfg-options", *options]) == 0
    return json.loads((out / "test_metrics.json").read_text())


_CACHE: dict = {}


def exported(name: str, tmp_path_factory) -> tuple[list[str], Path, Path]:
    """(options, checkpoint, ONNX file) of toy ``name``, once per session."""
    if name not in _CACHE:
        folder = tmp_path_factory.mktemp(name)
        options, checkpoint = toy(name, folder)
        onnx_file = folder / "model.onnx"
        assert export_cli.main([str(checkpoint), str(onnx_file), "--height", "96", "--width", "128"]) == 0
        _CACHE[name] = options, checkpoint, onnx_file
    return _CACHE[name]


SLOW = pytest.mark.slow


@pytest.mark.parametrize("name", ["segformer_pvt_b0_toy", *(pytest.param(n, marks=SLOW) for n in list(TOYS)[1:])])
def test_onnx_file_gives_the_checkpoints_metrics(name, tmp_path_factory, tmp_path, capsys):
    options, checkpoint, onnx_file = exported(name, tmp_path_factory)
    capsys.readouterr()
    ours = evaluate(name, checkpoint, options, tmp_path / "pth")
    table = capsys.readouterr().out
    theirs = evaluate(name, onnx_file, options, tmp_path / "onnx")
    assert capsys.readouterr().out.splitlines()[:-1] == table.splitlines()[:-1]  # the same table
    assert theirs["onnx"] == str(onnx_file) and theirs["provider"] == "CPUExecutionProvider"
    metric = TOYS[name][0]
    assert ours[metric] == pytest.approx(theirs[metric], abs=5e-4)  # equal to 3 decimals
    for key, value in ours.items():
        if isinstance(value, float) and value == value:
            assert theirs[key] == pytest.approx(value, abs=5e-4), key


def test_another_tasks_file_is_one_line(tmp_path_factory, tmp_path, capsys):
    options, _, onnx_file = exported("segformer_pvt_b0_toy", tmp_path_factory)
    capsys.readouterr()
    config = str(ROOT / "configs" / "glpn_pvt_b0_toy.py")
    assert test_cli.main([config, str(onnx_file), "--work-dir", str(tmp_path), "--cfg-options",
                          f"data.root={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a segmentation model but the config is for depth" in err
    assert not (tmp_path / "test_metrics.json").exists()


def test_file_without_our_metadata_and_truncated_file(tmp_path_factory, tmp_path, capsys):
    import onnx

    options, _, onnx_file = exported("segformer_pvt_b0_toy", tmp_path_factory)
    bare = onnx.load(onnx_file)
    del bare.metadata_props[:]
    onnx.save(bare, tmp_path / "bare.onnx")
    (tmp_path / "cut.onnx").write_bytes(onnx_file.read_bytes()[:100_000])
    capsys.readouterr()
    config = str(ROOT / "configs" / "segformer_pvt_b0_toy.py")
    for name, message in (("bare.onnx", "no densepred metadata"), ("cut.onnx", "is not a readable ONNX model")):
        assert test_cli.main([config, str(tmp_path / name), "--work-dir", str(tmp_path / "w"),
                              "--cfg-options", *options]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {tmp_path / name}") and message in err
    import infer as infer_cli

    image = next((tmp_path_factory.getbasetemp()).rglob("*.jpg"))
    assert infer_cli.main(["--onnx", str(tmp_path / "cut.onnx"), str(image), "--out", str(tmp_path / "p")]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a readable ONNX model" in err and "Traceback" not in err


def test_padded_batch_of_mixed_sizes_runs_per_size(tmp_path_factory):
    """The detector's evaluation batches: padded images of two sizes give PyTorch's outputs for each image
    (the file runs each size group unpadded; the detector is batch-invariant). Tolerance: the export check's."""
    from tasks.common.onnx_eval import onnx_model
    from tests.tasks.common.test_export import exported as exported_model

    model, path = exported_model("detection_refine", tmp_path_factory)
    stand_in = onnx_model(path)
    assert stand_in.num_classes == model.num_classes and not list(stand_in.parameters())
    x = torch.randn(3, 3, 128, 160)
    mask = torch.zeros(3, 128, 160, dtype=torch.long)
    mask[0, :96, :128] = mask[1] = mask[2, :96, :128] = 1
    with torch.inference_mode():
        ours, theirs = model(x, mask), stand_in(x, mask)
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(theirs[key], ours[key], atol=1e-4, rtol=1e-4)
