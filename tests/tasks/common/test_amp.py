"""bf16 autocast as a first-class path: every task model's outputs and one training step's gradients under
``torch.autocast("cpu", bfloat16)`` against float32, the float32 islands (heads' outputs, losses, the
matcher's cost matrix), evaluation and tools/infer.py under ``amp``, and the ``amp`` errors.

The bf16 tolerance rule: bf16 keeps 8 significant bits (unit roundoff 2^-9 ~ 2e-3); through the b0 networks
here (8-16 blocks) the rounding of every matrix product and convolution accumulates to relative L2 errors of
~0.5-1.5e-2 on the outputs and ~1-3e-2 on the gradients. A whole tensor (not its single elements: values
near zero have no relative precision) is compared by ``||bf16 - fp32|| / ||fp32||``: at most 3e-2 for outputs
and the loss, 5e-2 for the gradient of all parameters together (measured: 1.1-1.3e-2). Deformable-DETR's
gradient differs more (0.22 here, with the same Hungarian assignment and outputs within 3e-3): the gradient with
respect to a sampling location is the difference of neighbouring value pixels, which bf16 values (the value
projection's output) resolve to 1/256 of their size; most of the difference is in ``reference_points``,
``query_embed`` and the box heads. Its bound is 0.3, which a missing or zeroed gradient path (error ~1) fails.
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.classification.losses import classification_loss
from tasks.classification.model import ImageClassifier
from tasks.common import amp
from tasks.depth.losses import silog_loss
from tasks.depth.model import GLPN
from tasks.detection.losses import SetCriterion, weighted_total
from tasks.detection.matcher import HungarianMatcher
from tasks.detection.model import DeformableDETR
from tasks.segmentation.losses import segmentation_loss
from tasks.segmentation.model import SegFormer
from tests.utils import perturb

ROOT = Path(__file__).resolve().parents[3]
OUTPUT_TOLERANCE = 3e-2
GRAD_TOLERANCE = {"segmentation": 5e-2, "depth": 5e-2, "classification": 5e-2, "detection": 0.3}
WEIGHTS = {"loss_ce": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0}


def _detr_targets():
    g = torch.Generator().manual_seed(0)
    targets = []
    for n in (3, 5):
        centre, extent = torch.rand(n, 2, generator=g) * 0.6 + 0.2, torch.rand(n, 2, generator=g) * 0.3 + 0.1
        targets.append({"labels": torch.randint(0, 5, (n,), generator=g), "boxes": torch.cat([centre, extent], 1)})
    return targets


def _case(task: str, device: str = "cpu"):
    """``(model, input, loss(model_output) -> scalar)`` with perturbed random weights. The targets are coherent
    (large regions of one class or depth): random per-pixel targets make a random-weight model's gradient the
    small residual of large cancelling sums (its relative bf16 error was 0.6 for SegFormer-b0, and as large for
    Hugging Face's), which says nothing about training, where the gradient follows the data."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 96, 128, device=device)
    if task == "segmentation":
        target = torch.zeros(2, 96, 128, dtype=torch.long, device=device)
        target[:, :, 64:] = 3
        model, loss = SegFormer("mit_b0", num_classes=5), lambda out: segmentation_loss(out, target)["loss_ce"]
    elif task == "depth":
        target = torch.full((2, 96, 128), 8.0, device=device)
        target[:, :48] = 2.0
        x = x.sigmoid()
        model, loss = GLPN("mit_b0"), lambda out: silog_loss(out, target)["loss_silog"]
    elif task == "classification":
        target = (torch.eye(10)[[2, 7]] * 0.9 + 0.01).to(device)
        model, loss = ImageClassifier("pvt_v2_b0", num_classes=10), lambda out: classification_loss(out, target)["loss_cls"]
    else:
        model = DeformableDETR("pvt_v2_b0", num_classes=5, num_queries=20, hidden_dim=64, nheads=4, enc_layers=2,
                               dec_layers=2, dim_feedforward=128, with_box_refine=True)
        criterion = SetCriterion(5, HungarianMatcher(), WEIGHTS)
        targets = [{k: v.to(device) for k, v in t.items()} for t in _detr_targets()]
        loss = lambda out: weighted_total(criterion(out, targets), WEIGHTS)  # noqa: E731
    return perturb(model).to(device), x, loss


def _flat_outputs(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    tensors = [out["pred_logits"], out["pred_boxes"]]
    for aux in out["aux_outputs"]:
        tensors += [aux["pred_logits"], aux["pred_boxes"]]
    return tensors


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


TASKS = ["segmentation", "depth", "classification", "detection"]


@pytest.mark.parametrize("task", TASKS)
def test_bf16_outputs_and_gradients_match_fp32(task):
    _check_against_fp32(task, "bf16", "cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("mode", ["bf16", "fp16"])
@pytest.mark.parametrize("task", TASKS)
def test_cuda_autocast_outputs_and_gradients_match_fp32(task, mode):
    _check_against_fp32(task, mode, "cuda")  # fp16 keeps 11 bits: within the bf16 bounds


def _check_against_fp32(task: str, mode: str, device: str) -> None:
    model, x, loss_fn = _case(task, device)
    model.eval()
    with torch.no_grad():
        ref = _flat_outputs(model(x))
        with amp.autocast(mode, device):
            low = _flat_outputs(model(x))
    for i, (a, b) in enumerate(zip(low, ref)):
        assert a.dtype == torch.float32, f"output {i} leaves the model as {a.dtype}"
        assert _rel(a, b) <= OUTPUT_TOLERANCE, f"output {i}: relative error {_rel(a, b):.3g}"

    # Gradients in eval mode: BatchNorm on its running statistics. In train mode a random-weight head's BatchNorm
    # normalises a nearly constant map, whose small variations bf16 rounds away (relative error 0.4-0.5 in
    # SegFormer-b0 at our init); trained weights do not do that, and there is no dropout to switch off here.
    grads, losses = [], []
    for current in ("none", mode):
        model.zero_grad(set_to_none=True)
        with amp.autocast(current, device):
            loss = loss_fn(model(x))
        assert loss.dtype == torch.float32
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert _rel(losses[1], losses[0]) <= OUTPUT_TOLERANCE, f"loss {losses[1]:.5g} vs {losses[0]:.5g}"
    assert grads[0].shape == grads[1].shape
    assert _rel(grads[1], grads[0]) <= GRAD_TOLERANCE[task], f"gradient: relative error {_rel(grads[1], grads[0]):.3g}"
    assert grads[1].dtype == torch.float32  # parameters and their gradients stay fp32 under autocast


def test_losses_and_matcher_run_in_fp32_under_autocast(monkeypatch):
    seen = []
    original = HungarianMatcher.cost_matrix

    def spy(self, logits, boxes, labels, target_boxes):
        seen.append((logits.dtype, boxes.dtype, torch.is_autocast_enabled("cpu")))
        return original(self, logits, boxes, labels, target_boxes)

    monkeypatch.setattr(HungarianMatcher, "cost_matrix", spy)
    g = torch.Generator().manual_seed(1)
    outputs = {"pred_logits": torch.randn(2, 20, 5, generator=g).bfloat16().requires_grad_(),
               "pred_boxes": torch.rand(2, 20, 4, generator=g).mul(0.5).add(0.2).bfloat16().requires_grad_()}
    outputs["aux_outputs"] = [{k: v * 1 for k, v in outputs.items()}]
    with amp.autocast("bf16", "cpu"):
        losses = SetCriterion(5, HungarianMatcher(), WEIGHTS)(outputs, _detr_targets())
        seg = segmentation_loss(torch.randn(1, 3, 8, 8).bfloat16(), torch.randint(0, 3, (1, 16, 16)))
        depth = silog_loss(torch.rand(1, 1, 8, 8).bfloat16() + 0.5, torch.rand(1, 8, 8) + 0.5)
        cls = classification_loss(torch.randn(2, 4).bfloat16(), torch.softmax(torch.randn(2, 4), -1))
    assert seen and all(s == (torch.float32, torch.float32, False) for s in seen)
    assert all(v.dtype == torch.float32 for v in losses.values())
    assert {seg["loss_ce"].dtype, depth["loss_silog"].dtype, cls["loss_cls"].dtype} == {torch.float32}
    weighted_total(losses, WEIGHTS).backward()  # the gradients reach the bf16 outputs through the casts
    assert outputs["pred_logits"].grad.dtype == torch.bfloat16 and outputs["pred_logits"].grad.abs().sum() > 0


def test_autocast_choices_and_errors():
    assert isinstance(amp.autocast("none", "cpu"), type(amp.autocast(None, "cpu")))
    with amp.autocast("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        with amp.no_autocast():
            assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="amp must be one of none, bf16, fp16, got 'bf32'"):
        amp.autocast("bf32", "cpu")
    with pytest.raises(ValueError, match="fp16.*needs CUDA"):
        amp.autocast("fp16", "cpu")


def test_evaluation_under_bf16_matches_fp32(tmp_path):
    from tasks import get_task
    from tasks.common.config import apply_options, load_config
    from tasks.common.engine import evaluate_checkpoint

    options = [f"data.root={tmp_path / 'data'}", "data.num_train=4", "data.num_val=4", "data.num_workers=0"]
    cfg = apply_options(load_config(ROOT / "configs" / "glpn_pvt_b0_toy.py"), options)
    task = get_task(cfg)
    torch.manual_seed(0)
    model = perturb(task.build_model())
    torch.save({"model": model.state_dict(), "meta": {"task": "depth", "model": model.config}}, tmp_path / "m.pth")
    fp32 = evaluate_checkpoint(task, cfg, tmp_path / "m.pth", tmp_path / "fp32")
    bf16 = evaluate_checkpoint(task, apply_options(cfg, ["runtime.amp='bf16'"]), tmp_path / "m.pth", tmp_path / "bf16")
    assert fp32 != bf16  # the bf16 run really ran in bf16
    for key in ("abs_rel", "rmse", "d1"):
        assert bf16[key] == pytest.approx(fp32[key], rel=OUTPUT_TOLERANCE, abs=1e-3), key


def test_infer_cli_amp(tmp_path):
    torch.manual_seed(0)
    model = perturb(SegFormer("mit_b0", num_classes=4, decoder_dim=32, class_names=["a", "b", "c", "d"]))
    torch.save({"model": model.state_dict(), "meta": {"task": "segmentation", "model": model.config}}, tmp_path / "m.pth")
    image = tmp_path / "x.png"
    import cv2

    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8))
    cmd = [sys.executable, str(ROOT / "tools" / "infer.py"), str(tmp_path / "m.pth"), str(image), "--out", str(tmp_path / "o")]
    result = subprocess.run([*cmd, "--amp", "bf16"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "o" / "x.png").is_file()
    for bad, message in (("fp16", "needs CUDA"), ("half", "amp must be one of none, bf16, fp16")):
        result = subprocess.run([*cmd, "--amp", bad], capture_output=True, text=True, timeout=300)
        assert result.returncode == 2 and result.stderr.startswith("error:") and message in result.stderr
        assert "Traceback" not in result.stderr
