"""The detection task hands the engine every loss term to log and the weighted total to back-propagate."""
from pathlib import Path

import pytest
import torch

from tasks import get_task
from tasks.common.config import load_config
from tasks.common.engine import total_loss
from tasks.common.logs import main_terms
from tasks.detection.losses import weighted_total

ROOT = Path(__file__).resolve().parents[3]


def test_loss_returns_every_term_and_the_weighted_total():
    cfg = load_config(ROOT / "configs" / "deformable_detr_pvt_b0_toy.py")
    task = get_task(cfg)
    torch.manual_seed(0)
    model = task.build_model()
    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.randn(2, 3, 64, 64, generator=g),
        "pixel_mask": torch.ones(2, 64, 64, dtype=torch.long),
        "targets": [
            {"labels": torch.tensor([1, 3]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])},
            {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]])},
        ],
    }
    losses = task.loss(model, batch, torch.device("cpu"))
    values = {k: float(v.detach()) for k, v in losses.items()}
    aux = [f"_{i}" for i in range(cfg.model.dec_layers - 1)]
    expected = {f"{t}{s}" for t in ("loss_ce", "loss_bbox", "loss_giou") for s in ("", *aux)}
    assert set(losses) == {"loss", "cardinality_error", *expected}
    terms = {k: v for k, v in losses.items() if k != "loss"}
    assert total_loss(losses) is losses["loss"]
    assert values["loss"] == pytest.approx(float(weighted_total(terms, task.criterion.weight_dict).detach()), rel=1e-6)
    weights = task.criterion.weight_dict  # the total is not the plain sum: loss_bbox counts 5 times
    weighted = sum(values[k] * weights[k.rstrip("_0123456789")] for k in terms if k.startswith("loss_"))
    assert values["loss"] == pytest.approx(weighted, rel=1e-5)
    assert main_terms(losses) == ["loss_ce", "loss_bbox", "loss_giou"]
    losses["loss"].backward()  # the weighted total carries the gradient
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head.parameters())
