"""The collectives the training loop and the distributed evaluator make, each on the device the group serves.

With ``use_gpu`` Ray Train's process group is NCCL, which serves CUDA tensors only: a CPU tensor handed to
``all_reduce`` fails with ``No backend type associated with device type cpu``, after the work it was meant to
summarise is done. So every tensor built here is created on ``device``, the worker's device
(``ray.train.torch.get_device()``); gloo, on CPU workers, takes the same calls.

Object collectives (:func:`gather_objects`) pickle into tensors that torch itself places on the device the group
serves: for NCCL that is ``torch.cuda.current_device()``, which Ray Train sets to the worker's GPU before the
training function starts (and ``prepare_model`` sets again), and which :func:`init_local_group` sets here.

Every helper is a no-op without a process group, and runs the collective whenever there is one, also at world
size 1: a one-GPU run then makes the very NCCL calls a multi-GPU run makes, so the first lent GPU checks them.
Only torch is imported: ``bench/gpu.py`` calls these helpers on a machine without Ray.
"""

from __future__ import annotations

import socket
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["gather_objects", "group_active", "init_local_group", "max_over_ranks", "mean_over_ranks",
           "sum_over_ranks"]


def group_active() -> bool:
    """Whether a default process group exists (Ray Train workers have one; a plain process does not)."""
    return dist.is_available() and dist.is_initialized()


def mean_over_ranks(value: float, weight: int, device: torch.device) -> float:
    """``value`` averaged over every rank, weighted by ``weight`` (all ranks must call this)."""
    if not group_active():
        return value
    sums = torch.tensor([value * weight, float(weight)], dtype=torch.float64, device=device)
    dist.all_reduce(sums)
    return float(sums[0] / max(float(sums[1]), 1.0))


def sum_over_ranks(counts: list[int], device: torch.device) -> list[int]:
    """Each of ``counts`` summed over every rank (all ranks must call this)."""
    if not group_active():
        return list(counts)
    sums = torch.tensor(counts, dtype=torch.int64, device=device)
    dist.all_reduce(sums)
    return [int(v) for v in sums.tolist()]


def max_over_ranks(value: float, device: torch.device) -> float:
    """The largest ``value`` over every rank (all ranks must call this)."""
    if not group_active():
        return value
    top = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(top, op=dist.ReduceOp.MAX)
    return float(top.item())


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order (all ranks must call this). Tensors inside come back on
    the device they were pickled from: keep them on the CPU."""
    if not group_active():
        return [obj]
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, obj)
    return parts


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def init_local_group(device: torch.device) -> str:
    """A one-process group on this machine, as Ray Train would make it for one worker: NCCL for a CUDA
    ``device`` (which becomes the current CUDA device, as Ray Train makes it), gloo otherwise. Returns the
    backend; ``dist.destroy_process_group()`` ends it."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":  # set_device refuses a bare "cuda": it wants an index
        torch.cuda.set_device(device.index if device.index is not None else torch.cuda.current_device())
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    return backend
