"""Several machines: torchrun's multi-node rendezvous (--nnodes, --rdzv-backend=c10d, --rdzv-endpoint). Two
single-process "nodes" on this machine (gloo over 127.0.0.1) train exactly as one node with two processes."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tasks.common import checkpoint

SCRIPT = Path(__file__).with_name("fake_task.py")
ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*launch, work_dir):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", *launch, str(SCRIPT), str(work_dir), "8"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_nodes_train_as_one_node_with_two_processes(tmp_path):
    one = _torchrun("--standalone", "--nproc_per_node=2", work_dir=tmp_path / "one_node")
    out = one.communicate(timeout=600)
    assert one.returncode == 0, out[1][-3000:]

    port = _free_port()
    nodes = [
        _torchrun("--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
                  "--rdzv-id=test", work_dir=tmp_path / "two_nodes")
        for _ in range(2)
    ]
    for node in nodes:
        out = node.communicate(timeout=600)
        assert node.returncode == 0, out[1][-3000:]

    start = json.loads((tmp_path / "two_nodes" / "log.jsonl").read_text().splitlines()[0])
    assert start["world_size"] == 2
    a = checkpoint.load(tmp_path / "one_node" / "last.pth")
    b = checkpoint.load(tmp_path / "two_nodes" / "last.pth")
    assert a["iteration"] == b["iteration"] == 8
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    metrics = [json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one_node", "two_nodes")]
    assert metrics[0] == metrics[1] and metrics[0]["count"] == 24
