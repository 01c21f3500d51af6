"""CUDA: a bf16 training run per task, the engine's collectives on a one-process "cpu:gloo,cuda:nccl" group,
and a training step that never waits for the device (``pytest -m cuda``; skipped without a GPU)."""
import json
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from tasks import get_task
from tasks.common.config import apply_options, load_config
from tasks.common.distributed import (
    all_gather_objects,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    init_distributed,
    process_group_backend,
)
from tasks.common.engine import fit, train_one_step
from tasks.common.logs import JsonlLog, LossMeter
from tasks.common.optim import build_optimizer
from tests.tasks.common.fake_task import FakeTask, Net, fake_config

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

ROOT = Path(__file__).resolve().parents[3]
TINY = ["data.num_train=8", "data.num_val=2", "data.num_workers=0", "data.batch_size=2", "schedule.max_iters=2",
        "schedule.eval_interval=2", "schedule.checkpoint_interval=2", "schedule.log_interval=1", "schedule.warmup_iters=0",
        "runtime.device='cuda'", "runtime.amp='bf16'"]


@pytest.mark.parametrize("config", ["segformer_pvt_b0_toy", "glpn_pvt_b0_toy", "deformable_detr_pvt_b0_toy"])
def test_bf16_training_per_task(config, tmp_path):
    cfg = apply_options(load_config(ROOT / "configs" / f"{config}.py"), [f"data.root={tmp_path / 'data'}", *TINY])
    result = fit(get_task(cfg), cfg, tmp_path / "work")
    assert result["iteration"] == 2 and result["metrics"] is not None
    train = [r for r in JsonlLog(tmp_path / "work" / "log.jsonl").read() if r["mode"] == "train"]
    assert len(train) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in train)
    assert json.loads((tmp_path / "work" / "config.json").read_text())["runtime"]["amp"] == "bf16"


@pytest.fixture
def one_process_group():
    """A real process group of one CUDA process with both backends, as ``init_distributed`` makes on CUDA."""
    device = init_distributed("cuda").device
    torch.cuda.set_device(device)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group(process_group_backend(device), init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        yield device
    finally:
        dist.destroy_process_group()


def test_collectives_serve_cpu_and_cuda_tensors(one_process_group):
    device = one_process_group
    assert process_group_backend(device) == "cpu:gloo,cuda:nccl"
    assert all_reduce_sum(torch.tensor([2.0])).tolist() == [2.0]  # CPU: gloo (the stop flag, metric counts)
    on_gpu = all_reduce_sum(torch.tensor([3.0], device=device))  # CUDA: nccl (the loss terms)
    assert on_gpu.device.type == "cuda" and on_gpu.tolist() == [3.0]
    model = Net(4).to(device)
    broadcast_buffers(model)  # BatchNorm statistics live on the GPU
    assert all_gather_objects({"rank": 0}) == [{"rank": 0}]
    barrier()
    meter = LossMeter(device)
    meter.add({"loss": torch.tensor(2.0, device=device), "loss_a": torch.tensor(1.0, device=device)}, 1)
    assert meter.read() == ({"loss": 2.0, "loss_a": 1.0}, None)
    meter.add({"loss": torch.tensor(float("nan"), device=device), "loss_a": torch.tensor(1.0, device=device)}, 2)
    _, bad = meter.read()
    assert bad[0] == 2


def test_fit_in_a_cuda_process_group(one_process_group, tmp_path):
    cfg = fake_config(6)
    cfg.runtime.device = "cuda"
    result = fit(FakeTask(cfg), cfg, tmp_path)
    assert result["iteration"] == 6 and (tmp_path / "last.pth").is_file()
    assert json.loads((tmp_path / "metrics.json").read_text())["count"] == 24


def test_a_training_step_does_not_wait_for_the_device(tmp_path):
    cfg = fake_config(4, clip_grad=1.0)
    device = torch.device("cuda")
    task, model = FakeTask(cfg), Net(8).to(device)
    optimizer = build_optimizer(model, cfg.optimizer)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    data = task.train_dataset()
    batches = iter([tuple(t.to(device) for t in task.collate([data[(i, i)] for i in range(4)])) for _ in range(3)])
    info = init_distributed("cuda")
    meter = LossMeter(device)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host sync in the step raises
    try:
        for it in range(3):
            meter.add(train_one_step(model, task, batches, optimizer, scaler, cfg, info), it + 1)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    means, bad = meter.read()
    assert bad is None and {"loss", "loss_mse", "grad_norm"} <= set(means)
