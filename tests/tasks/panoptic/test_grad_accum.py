"""Gradient accumulation trains as more processes do: through the engine's ``train_one_step``, one process with
``schedule.grad_accum=2`` (one image per micro-batch) gives the loss and the gradients of two gloo processes
with one image each under DistributedDataParallel. The loss normalisers and the things/stuff ratio are the
whole step's in both (the authors' all-reduced counts), not each micro-batch's."""
import copy

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tasks import get_task
from tasks.common.config import load_config
from tasks.common.distributed import DistInfo
from tasks.common.engine import train_one_step

CPU = torch.device("cpu")


class CaptureGrads(torch.optim.SGD):
    """Keeps the gradients a step would apply (a missing gradient as zeros) and leaves the weights as they are."""

    def __init__(self, params):
        super().__init__(params, lr=0.0)

    def step(self, closure=None):
        self.grads = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
                      for g in self.param_groups for p in g["params"]]


def _config(root):
    cfg = load_config("configs/panoptic_segformer_pvt_b0_toy.py")
    cfg.data.root, cfg.data.num_train, cfg.data.num_val = str(root), 4, 1
    cfg.model.num_queries, cfg.model.hidden_dim, cfg.model.dim_feedforward = 10, 32, 64
    cfg.model.enc_layers = cfg.model.thing_mask_layers = cfg.model.stuff_mask_layers = 1
    cfg.model.dec_layers = 2
    cfg.schedule.clip_grad = 0.0  # the raw gradients (clipping would scale both sides alike)
    cfg.runtime.amp = "none"
    return cfg


def _step(cfg, model, batches, info):
    """One engine step over ``batches`` -> (the step's loss, the gradients)."""
    task = get_task(cfg)
    net = torch.nn.parallel.DistributedDataParallel(model) if info.world_size > 1 else model
    optimizer = CaptureGrads(model.parameters())
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    out = train_one_step(net, task, iter(batches), optimizer, scaler, cfg, info)
    return out["loss"].detach(), optimizer.grads


def _worker(rank, world_size, init_file, out_dir, cfg, state, batches):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.set_num_threads(1)
        model = get_task(cfg).build_model().train()
        model.load_state_dict(state)
        loss, grads = _step(cfg, model, [batches[rank]], DistInfo(rank, world_size, CPU))
        torch.save({"loss": loss, "grads": grads}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes importing torch: ~25 CPU-seconds
def test_grad_accum_equals_more_processes(tmp_path):
    cfg = _config(tmp_path / "data")
    task = get_task(cfg)
    dataset = task.train_dataset()
    batches = [task.collate([dataset[(i, 0)]]) for i in range(2)]
    counts = [tuple(sum(len(t["labels"]) for t in part) for part in task.criterion.split(b["targets"])) for b in batches]
    # the case can fail: each micro-batch's own normalisers and ratio differ from the step's
    assert counts[0] != counts[1] and counts[0][0] * counts[1][1] != counts[0][1] * counts[1][0], counts
    torch.manual_seed(0)
    model = task.build_model().train()

    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path), cfg, model.state_dict(), batches),
             nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    cfg.schedule.grad_accum = 2
    loss, grads = _step(cfg, copy.deepcopy(model), batches, DistInfo(0, 1, CPU))

    # DDP averages the two processes' gradients; the engine reports each process's own loss (their mean is the
    # step's). fp32 sums in another order: 1e-6 is far above the rounding and far below any normaliser change.
    assert loss.item() == pytest.approx((ranks[0]["loss"].item() + ranks[1]["loss"].item()) / 2, abs=1e-6)
    assert len(grads) == len(ranks[0]["grads"])
    assert max(g.abs().max().item() for g in grads) > 1e-3  # gradients of substance, not all zeros
    for mine, theirs in zip(grads, ranks[0]["grads"]):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-6)
