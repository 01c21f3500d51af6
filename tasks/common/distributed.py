"""torch.distributed set-up for ``torchrun`` and small helpers.

On CUDA the process group has two backends, ``"cpu:gloo,cuda:nccl"``: NCCL for the tensors on the GPU (the
loss terms, BatchNorm buffers, gradients) and gloo for the small CPU tensors and Python objects the engine
and the evaluators exchange (the stop flag, RNG states, metric counts). NCCL alone rejects CPU tensors.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"runtime.device={name!r} but CUDA is not available; use 'cpu' or 'auto'")
        return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)
    if name != "cpu":
        raise ValueError(f"runtime.device must be auto, cpu, cuda or cuda:N, got {name!r}")
    return torch.device("cpu")


def init_distributed(device: str) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); otherwise a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(process_group_backend(dev))
    rank = dist.get_rank() if dist.is_initialized() else 0
    return DistInfo(rank, dist.get_world_size() if dist.is_initialized() else 1, dev)


def process_group_backend(device: torch.device) -> str:
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def is_distributed() -> bool:
    """A process group is set up (``init_distributed`` makes one for WORLD_SIZE > 1; a test may make a
    one-process group, so that every collective runs)."""
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (in place; a no-op in a single process). A CPU tensor under an NCCL-only group (one a
    user set up; ``init_distributed`` makes a CPU + CUDA group) is reduced on this rank's GPU and copied back."""
    if is_distributed():
        if t.device.type == "cpu" and dist.get_backend() == "nccl":
            t.copy_(all_reduce_sum(t.to(torch.device("cuda", torch.cuda.current_device()))))
        else:
            dist.all_reduce(t)
    return t


def all_gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every rank: DDP only syncs them at the next forward,
    so without this each rank would evaluate with the statistics of its own last batch."""
    if is_distributed():
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def rank0_first(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on rank 0 first, then on the other ranks (e.g. writing a dataset once)."""
    if is_distributed() and dist.get_rank() != 0:
        barrier()
    result = fn(*args, **kwargs)
    if is_distributed() and dist.get_rank() == 0:
        barrier()
    return result
