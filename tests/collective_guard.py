"""A test-time guard that fails, on CPU workers, a collective that would fail under NCCL on GPU workers.

NCCL serves CUDA tensors only. A tensor made without a device (``torch.tensor([seconds])``) lands on the
process default device, the CPU, and a GPU run dies in the collective with ``No backend type associated with
device type cpu``. On CPU workers every tensor is on the CPU, so checking ``tensor.device`` cannot tell that
bug from correct code. What can: where each tensor was *meant* to be. Inside the guard

* a :class:`HostMarks` torch function mode marks every tensor that a GPU worker would hold on the host: made by
  a factory (``torch.tensor``, ``zeros``, ``arange``, ``rand`` ...) without ``device=``, moved with ``.cpu()``
  or to a device spelled ``"cpu"``, or computed only from marked tensors. A tensor placed with ``device=`` /
  ``.to(device)`` (the worker's device object, from ``ray.train.torch.get_device()``) or computed with one
  such input is not marked (a CUDA op with a CUDA input gives a CUDA result); tensors made outside the mode
  (other threads, C++) are trusted.
* every tensor collective of ``torch.distributed`` (all_reduce, all_gather, broadcast, reduce_scatter, ...)
  raises :class:`CollectiveOnHostError`, naming the call site, when a marked tensor reaches it. Object
  collectives (``all_gather_object`` ...) are let through: torch pickles into tensors it places on the device
  the group serves (``torch.cuda.current_device()`` under NCCL); the tensor collectives they make are not
  checked.

Each collective seen is appended to ``<record_dir>/collectives-<pid>.jsonl`` (op, verdict, project call
sites), so a test can also check that the guard was really active and saw the calls it meant to hold.

Use it in Ray Train workers by wrapping the worker function: ``guarded(train_loop_per_worker, record_dir)``;
``register()`` makes Ray ship this module by value (the workers cannot import ``tests/``).
"""

from __future__ import annotations

import functools
import json
import os
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.distributed_c10d as c10d
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

MARK = "_on_host_by_default"
TENSOR_COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "reduce_scatter",
                      "reduce_scatter_tensor", "broadcast", "reduce", "gather", "scatter", "all_to_all",
                      "all_to_all_single", "send", "recv", "isend", "irecv")
OBJECT_COLLECTIVES = ("all_gather_object", "broadcast_object_list", "gather_object", "scatter_object_list")


class CollectiveOnHostError(RuntimeError):
    """A collective got a tensor that a GPU worker would hold on the CPU (NCCL would refuse it)."""


def marked(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and bool(getattr(t, MARK, False))


def _set_mark(t: torch.Tensor, value: bool) -> None:
    try:
        setattr(t, MARK, value)
    except (AttributeError, RuntimeError):  # a tensor type without a __dict__: leave it unmarked (trusted)
        pass


def _device_means_host(device: Any) -> bool:
    """A device spelled as the string ``"cpu"`` is the host on any worker; a ``torch.device`` object is taken to
    be the worker's device (on a CPU worker both are the CPU, and that is the ambiguity this guard resolves)."""
    return isinstance(device, str) and device.split(":")[0] == "cpu"


def _explicit_device(func: Any, args: tuple, kwargs: dict) -> tuple[bool, Any]:
    """(whether the call names a device, that device) for factories, ``.to`` and ``.cpu`` / ``.cuda``."""
    name = getattr(func, "__name__", "")
    if name == "cpu":
        return True, "cpu"
    if name == "cuda":
        return True, "cuda"
    if kwargs.get("device") is not None:
        return True, kwargs["device"]
    if name == "to":
        for arg in args[1:]:
            if isinstance(arg, (torch.device, str, int)):
                return True, arg
            if isinstance(arg, torch.Tensor):  # .to(other): where other is
                return True, "cpu" if marked(arg) else None
    return False, None


class HostMarks(TorchFunctionMode):
    """Marks the tensors a GPU worker would hold on the host (see the module docstring)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name == "__set__":
            if getattr(getattr(func, "__self__", None), "__name__", "") == "data":  # param.data = moved
                _set_mark(args[0], marked(args[1]))
            return result
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        named, device = _explicit_device(func, args, kwargs)
        if named:
            host = _device_means_host(device)
            if args and result is args[0]:  # .to() that moved nothing returns self: keep the original's mark
                result = result.view_as(result)
        elif inputs and any(result is t for t in inputs):  # in place: the tensor keeps its placement
            return result
        else:  # a factory without device= (no tensor input), or an op: host only if every input is
            host = all(marked(t) for t in inputs)
        for out in tree_flatten(result)[0]:
            if isinstance(out, torch.Tensor):
                _set_mark(out, host)
        return result


def _call_sites() -> tuple[str, list[str]]:
    """(the innermost frame outside torch and this module: who called the collective, the project's frames on
    the stack: hvt/, bench/ and torchmetrics/, innermost last), each as ``path:line function``."""
    caller, sites = "?", []
    for frame in traceback.extract_stack():
        path = frame.filename.replace(os.sep, "/")
        if "collective_guard" in path:
            continue
        if "/torch/" not in path:
            caller = f"{path}:{frame.lineno} {frame.name}"
        for root in ("/hvt/", "/bench/", "/torchmetrics/"):
            if root in path:
                sites.append(f"{root.strip('/')}/{path.split(root, 1)[1]}:{frame.lineno} {frame.name}")
                break
    return caller, sites


def _record(record_dir: Path, entry: dict[str, Any]) -> None:
    with open(record_dir / f"collectives-{os.getpid()}.jsonl", "a") as out:
        out.write(json.dumps(entry) + "\n")


def _checked(name: str, original: Callable, record_dir: Path, check: bool, state: threading.local) -> Callable:
    @functools.wraps(original)
    def collective(*args, **kwargs):
        if getattr(state, "depth", 0):  # called by another collective (object ones pickle into tensors)
            return original(*args, **kwargs)
        caller, sites = _call_sites()
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        bad = [t for t in tensors if marked(t)] if check else []
        _record(record_dir, {"op": name, "ok": not bad, "caller": caller, "sites": sites})
        if bad:
            raise CollectiveOnHostError(
                f"{name} called from {caller} got a tensor on the process default device (the CPU) rather than "
                "the worker's device: it was made without device= or moved to the CPU, and NCCL would refuse "
                "it (No backend type associated with device type cpu). Make it with device=the worker's device "
                f"(ray.train.torch.get_device(); hvt/collectives.py does). Project frames: {sites}")
        state.depth = 1
        try:
            return original(*args, **kwargs)
        finally:
            state.depth = 0
    return collective


@contextmanager
def guard_collectives(record_dir: str | Path) -> Iterator[None]:
    """Within: tensor collectives refuse host-placed tensors; every collective is recorded in ``record_dir``.
    The collective wrappers are process-wide, the marking mode applies to the calling thread."""
    record_dir = Path(record_dir)
    record_dir.mkdir(parents=True, exist_ok=True)
    saved: list[tuple[Any, str, Any]] = []
    state = threading.local()  # made here, in the worker: a module-level one would not pickle
    for name in TENSOR_COLLECTIVES + OBJECT_COLLECTIVES:
        original = getattr(c10d, name, None)
        if original is None:
            continue
        wrapper = _checked(name, original, record_dir, name in TENSOR_COLLECTIVES, state)
        for module in (c10d, dist):  # torch.distributed re-exports them; callers use either name
            saved.append((module, name, getattr(module, name)))
            setattr(module, name, wrapper)
    try:
        with HostMarks():
            yield
    finally:
        for module, name, original in reversed(saved):
            setattr(module, name, original)


def guarded(worker_fn: Callable[[dict[str, Any]], Any], record_dir: str | Path) -> Callable[[dict[str, Any]], Any]:
    """``worker_fn`` (a Ray Train worker function) run under :func:`guard_collectives`."""
    record_dir = str(record_dir)

    def run_guarded(config: dict[str, Any]) -> Any:
        with guard_collectives(record_dir):
            return worker_fn(config)

    return run_guarded


def register() -> None:
    """Pickle this module by value, so that Ray workers, which cannot import ``tests/``, get the guard."""
    import sys

    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def records(record_dir: str | Path) -> list[dict[str, Any]]:
    """Every collective the guarded workers recorded."""
    return [json.loads(line) for path in sorted(Path(record_dir).glob("collectives-*.jsonl"))
            for line in path.read_text().splitlines()]
