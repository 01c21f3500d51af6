"""The panoptic task as the engine drives it, on a tiny toy dataset: model from the data's categories, every loss
term, in-memory PQ (equal to pq_compute on the PNGs it can also write), the metrics table and the config checks."""
import json

import pytest
import torch

from tasks import get_task
from tasks.common.config import load_config
from tasks.panoptic.evaluator import METRIC_NAMES, pq_compute


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    cfg = load_config("configs/panoptic_segformer_pvt_b0_toy.py")
    root = tmp_path_factory.mktemp("toy")
    cfg.data.root, cfg.data.num_train, cfg.data.num_val = str(root / "data"), 4, 3
    cfg.data.save_predictions = str(root / "predictions")
    cfg.model.num_queries, cfg.model.hidden_dim, cfg.model.dim_feedforward = 10, 64, 64
    cfg.model.enc_layers = cfg.model.thing_mask_layers = cfg.model.stuff_mask_layers = 1
    cfg.model.dec_layers = 2
    return get_task(cfg)


def test_model_carries_the_dataset_categories(task):
    task.val_dataset()
    model = task.build_model()
    assert model.category_ids == (1, 3, 7, 154, 187, 190)
    assert model.class_names == ("circle", "square", "triangle", "sand", "sky", "floor")
    assert model.isthing == (True, True, True, False, False, False)


def test_loss_terms(task):
    model = task.build_model()
    dataset = task.train_dataset()
    batch = task.collate([dataset[(i, 0)] for i in range(2)])
    losses = task.loss(model, batch, torch.device("cpu"))
    for key in ("loss", "loss_ce", "loss_bbox", "loss_giou", "loss_ce_0", "loss_mask_things", "loss_mask_things_0",
                "loss_mask_stuff", "loss_mask_stuff_0", "loss_cls_stuff", "things_ratio"):
        assert key in losses and torch.isfinite(losses[key]), key
    losses["loss"].backward()
    assert model.head.things_mask_head.attnen.linear[0].weight.grad is not None


def test_evaluate_in_memory_equals_pq_compute_on_written_files(task):
    model = task.build_model().eval()
    with torch.no_grad():  # confident stuff everywhere, so that the predictions are not empty
        model.head.cls_stuff_branches[-1].bias.fill_(5.0)
        model.head.stuff_mask_head.attnen.linear[0].bias.fill_(1.0)
    dataset = task.val_dataset()
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, collate_fn=task.collate)
    with torch.inference_mode():
        metrics = task.evaluate(model, loader, torch.device("cpu"))
    assert set(METRIC_NAMES) <= set(metrics)
    out = task.cfg.data.save_predictions
    with open(f"{out}/panoptic_predictions.json") as f:
        written = json.load(f)
    assert len(written["annotations"]) == 3
    official = pq_compute(dataset.ann_file, f"{out}/panoptic_predictions.json", dataset.png_dir, f"{out}/panoptic_predictions")
    for key, group in (("PQ", "All"), ("PQ_th", "Things"), ("PQ_st", "Stuff")):
        if official[group]["n"]:
            assert metrics[key] == pytest.approx(official[group]["pq"], abs=1e-12)
    table = task.metrics_table(metrics)
    assert "sky" in table and "PQ_th" in table


def test_one_query_per_thing_reaches_the_mask_decoder(task):
    """By default (the config's query filter, as the authors' released code) the thing mask decoder decodes exactly
    one query per ground-truth thing: the query the one-to-one assignment gave it."""
    assert task.cfg.model.max_pos == 1
    torch.manual_seed(0)
    model = task.build_model()
    dataset = task.train_dataset()
    batch = task.collate([dataset[(i, 0)] for i in range(3)])
    things, _ = task.criterion.split(batch["targets"])
    selector = task.criterion.selector(batch["targets"])
    with torch.no_grad():
        out = model(batch["image"], batch["pixel_mask"], select=selector)
    counts = [len(t["labels"]) for t in things]
    assert sum(counts) > 0 and out["thing_masks"].shape[1] == max(counts)
    for b, count in enumerate(counts):
        index = out["thing_index"][b]
        assert torch.equal(index[index >= 0], selector.results[b].rows) and len(selector.results[b].rows) == count


def test_b5_recipe_follows_the_authors(task):
    """The B5 recipe starts from the authors' ImageNet-22k backbone file and decays every parameter."""
    from tasks.common.optim import param_groups
    from tasks.panoptic.weights import BACKBONE_DOWNLOADS

    cfg = load_config("configs/panoptic_segformer_pvt_b5_coco.py")
    assert cfg.model.backbone_weights == "checkpoints/pvt_v2_b5_22k.pth" and "pvt_v2_b5_22k.pth" in BACKBONE_DOWNLOADS
    assert cfg.model.max_pos == 1 and cfg.optimizer.decay_norm_and_bias
    model = task.build_model()
    groups = param_groups(model, cfg.optimizer, model.parameter_groups())
    assert {g["weight_decay"] for g in groups} == {1e-4}
    assert sum(len(g["params"]) for g in groups) == len([p for p in model.parameters() if p.requires_grad])


def test_missing_authors_backbone_says_where_to_get_it(task, tmp_path):
    path = tmp_path / "checkpoints" / "pvt_v2_b5_22k.pth"
    task.cfg.model.backbone_weights = str(path)
    try:
        with pytest.raises(FileNotFoundError, match=r"wget https://github\.com/whai362/PVT/releases/download/v2/"
                                                    r"pvt_v2_b5_22k\.pth -P .*checkpoints"):
            task.build_model()
    finally:
        task.cfg.model.backbone_weights = None


def test_class_counts_must_match_the_data(task):
    task.cfg.model.num_stuff_classes = 4
    try:
        with pytest.raises(ValueError, match="num_stuff_classes=4"):
            task.build_model()
    finally:
        task.cfg.model.num_stuff_classes = 3


@pytest.mark.slow
def test_toy_config_reaches_pq(tmp_path):
    """The whole toy command (data writing, 200 iterations, two evaluations) reaches PQ >= 0.5."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    cmd = [sys.executable, str(root / "tools" / "train.py"), str(root / "configs" / "panoptic_segformer_pvt_b0_toy.py"),
           "--work-dir", str(tmp_path), "--cfg-options", f"data.root={tmp_path / 'data'}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["iteration"] == 200
    assert metrics["PQ"] >= 0.5, metrics
