"""The ``paths`` section of ``bench/gpu.py``: one row per CUDA-only code path, each ``ok`` or the error.

A lent GPU is rare and short, so these run first and settle, in seconds each, what CPU tests cannot:

* ``process group``: ``hvt.collectives`` (what the training loop and the evaluator reduce and gather) under a
  real one-process NCCL group, and NCCL refusing a CPU tensor with the error of issue 23's finding 3 (which
  shows the check means something);
* ``distributed evaluator``: the evaluator's scoring and ``combine_shares`` (torchmetrics' sync, the wall-time
  max, the spend gather) under that group;
* ``training steps``: a few DDP steps of ``hvt.train.step.train_one_epoch`` (bf16 autocast, fused AdamW) and
  the loop's end-of-epoch collectives under that group;
* ``ray train``: the same evaluator and steps inside a Ray Train worker with ``use_gpu`` (Ray's NCCL group and
  its ``torch.cuda.set_device``), when Ray is importable;
* ``bf16 autocast``, ``nested attention`` (``hvt.model.varlen``'s variable-length kernel, forced, against the
  per-clip path, forward and backward) and ``inductor compile`` (``compile_blocks`` against eager).

On the CPU (``--smoke``) the process-group rows run with gloo, so the test keeps this code from rotting; the
rows that only mean something on CUDA say ``skipped: no CUDA``. A row whose project module cannot be imported
(the lent machine may lack Ray, pydantic or torchmetrics) says ``skipped: needs ...`` and fails nothing.
"""

from __future__ import annotations

import importlib.util
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

NO_CUDA = "skipped: no CUDA"
TOL_COMPILE = 1e-2  # compiled vs eager logits, relative: fused kernels reorder sums (and TF32 is on)
GRAD_TOL_FP32, GRAD_TOL_BF16 = 1e-3, 1e-1  # nested vs per-clip gradients, relative max
RAY_TIMEOUT_S = 240


class Skip(Exception):
    """The row cannot run here; its message is the row's status."""


def needs(*modules: str) -> None:
    """Raise :class:`Skip` naming the first of ``modules`` that is not installed."""
    for name in modules:
        if importlib.util.find_spec(name) is None:
            raise Skip(f"skipped: needs {name} (not installed here)")


def rel_diff(ref: torch.Tensor, got: torch.Tensor) -> float:
    ref, got = ref.detach().float(), got.detach().float()
    return float((ref - got).abs().max() / ref.abs().max().clamp_min(1e-6))


def uint8_batches(bench, count: int, batch: int, num_classes: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """``count`` CPU batches as Ray Data hands them to a worker: uint8 clips ``[B, T, H, W, 3]``, labels and
    ``decode_ok`` (the last clip of the first batch failed to decode, so that path is taken too)."""
    a = bench.args
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        ok = torch.ones(batch, dtype=torch.bool)
        if i == 0:
            ok[-1] = False
        out.append({"clip": torch.randint(0, 256, (batch, a.frames, a.size, a.size, 3), generator=g,
                                          dtype=torch.uint8),
                    "label": torch.randint(0, num_classes, (batch,), generator=g), "decode_ok": ok})
    return out


# ------------------------------------------------------------------ bodies shared by the direct and the Ray rows


def evaluator_check(bench, model: torch.nn.Module, device: torch.device) -> dict[str, Any]:
    """Score a few batches and combine the shares as ``hvt.evaluation.distributed`` does."""
    needs("torchmetrics", "pydantic")
    from hvt.evaluation.evaluate import SpendAccumulator, combine_shares, evaluate_batches
    from hvt.evaluation.evaluator import Evaluator
    from hvt.evaluation.metrics import ClipMetrics

    num_classes = model.config.num_classes
    batches = uint8_batches(bench, 2, bench.args.check_batch, num_classes, seed=11)
    metrics, spend = ClipMetrics(num_classes, device=device), SpendAccumulator()
    evaluate_batches(Evaluator(model, device, max_clips=bench.args.check_batch), batches, metrics, spend)
    result = combine_shares(metrics, spend, 1.0, device)
    scored = sum(int(b["decode_ok"].sum()) for b in batches)
    if (result["clips"], result["decode_failures"]) != (scored, 1) or not 0 <= result["top1"] <= 1:
        raise AssertionError(f"combined figures do not add up: {result['clips']} clips (want {scored}), "
                             f"{result['decode_failures']} failures (want 1), top-1 {result['top1']}")
    if "gflops_p50" not in result or result["clips_per_s"] <= 0:
        raise AssertionError(f"the gathered spend is missing: {sorted(result)}")
    return {"clips": result["clips"], "top1": round(result["top1"], 4)}


def training_check(bench, model: torch.nn.Module, device: torch.device, wrap=None) -> dict[str, Any]:
    """A few optimiser steps through ``train_one_epoch`` (DDP via ``wrap``, or a plain DDP wrapper), then the
    loop's end-of-epoch collectives (loss mean, counts, RNG states)."""
    needs("pydantic")
    from hvt.collectives import gather_objects, mean_over_ranks, sum_over_ranks
    from hvt.config import OptimConfig, TrainConfig
    from hvt.data.config import DataConfig
    from hvt.train.state import capture_rng
    from hvt.train.step import ddp_kwargs, train_one_epoch

    a = bench.args
    steps, batch = 3, a.check_batch
    cfg = TrainConfig(data=DataConfig(num_frames=a.frames, crop_size=a.size, train_short_side=(a.size, a.size),
                                      test_short_side=a.size, augment_on="decode"),
                      optim=OptimConfig(batch_size=batch, epochs=1, warmup_epochs=0))
    if wrap is None:
        ids = [device.index] if device.type == "cuda" else None
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, **ddp_kwargs(model, cfg))
    else:
        ddp = wrap(model, ddp_kwargs(model, cfg))
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=1e-4, **({"fused": True} if fused else {}))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    before = [p.detach().clone() for p in ddp.parameters()]
    batches = uint8_batches(bench, steps, batch, model.config.num_classes, seed=12)
    stats = train_one_epoch(ddp, batches, optimizer, scheduler, cfg, device, with_static=False)
    loss = mean_over_ranks(stats.metrics()["train_loss"], stats.seen, device)
    seen, failed = sum_over_ranks([stats.seen, stats.failed], device)
    states = gather_objects(capture_rng())
    moved = sum(not torch.equal(b, p.detach()) for b, p in zip(before, ddp.parameters(), strict=True))
    if stats.optimizer_steps != steps or (seen, failed) != (steps * batch - 1, 1) or len(states) < 1:
        raise AssertionError(f"{stats.optimizer_steps} steps, {seen} clips, {failed} failures, "
                             f"{len(states)} RNG states")
    if not math.isfinite(loss) or moved == 0:
        raise AssertionError(f"loss {loss}, {moved} parameters changed")
    return {"steps": steps, "loss": round(loss, 4), "params_updated": moved}


# ------------------------------------------------------------------ the rows


def process_group_rows(bench) -> None:
    """The group rows: one process group (NCCL on CUDA, gloo on the CPU) serves the next three rows."""
    import torch.distributed as dist

    from hvt.collectives import init_local_group

    dev = bench.dev
    if dev.type == "cuda" and dev.index is None:  # DDP's device_ids and set_device want an index
        dev = torch.device("cuda", torch.cuda.current_device())
    if not dist.is_available():
        bench.add({"section": "paths", "check": "process group", "status": "skipped: torch.distributed missing"})
        return
    backend = init_local_group(dev)
    try:
        label = {"backend": backend}
        row(bench, "process group", label, lambda: collectives_check(dev))
        if dev.type == "cuda":
            row(bench, "nccl refuses a CPU tensor", label, nccl_refuses_cpu)
        else:
            bench.add({"section": "paths", "check": "nccl refuses a CPU tensor", **label, "status": NO_CUDA})
        row(bench, "distributed evaluator", label,
            lambda: evaluator_check(bench, bench.model(bench.check_variant, "remove").eval(), dev))
        row(bench, "training steps", label,
            lambda: training_check(bench, bench.model(bench.check_variant, "remove").train(), dev))
    finally:
        dist.destroy_process_group()


def collectives_check(device: torch.device) -> dict[str, Any]:
    from hvt.collectives import gather_objects, max_over_ranks, mean_over_ranks, sum_over_ranks

    got = (mean_over_ranks(2.5, 4, device), sum_over_ranks([3, 1], device), max_over_ranks(7.0, device),
           gather_objects({"rank": 0}))
    if got != (2.5, [3, 1], 7.0, [{"rank": 0}]):
        raise AssertionError(f"world size 1 should give the local values back, got {got}")
    return {}


def nccl_refuses_cpu() -> dict[str, Any]:
    """What finding 3 was: NCCL refuses a CPU tensor. If it ever accepts one, the guard's premise is gone."""
    import torch.distributed as dist

    try:
        dist.all_reduce(torch.ones(1))
    except (RuntimeError, ValueError) as err:
        return {"refused_with": str(err).splitlines()[0][:120]}
    raise AssertionError("NCCL all-reduced a CPU tensor")


def ray_train_row(bench) -> None:
    if bench.dev.type != "cuda":
        bench.add({"section": "paths", "check": "ray train use_gpu", "status": NO_CUDA})
        return
    row(bench, "ray train use_gpu", {}, lambda: ray_train_check(bench))


def ray_train_check(bench, use_gpu: bool = True) -> dict[str, Any]:
    """The evaluator and a few training steps in one Ray Train worker with ``use_gpu``: Ray's NCCL group, its
    ``set_device`` and ``prepare_model``'s DDP, as a cluster run has them (``use_gpu=False``: gloo, to try the
    row's machinery on a CPU)."""
    needs("ray", "pydantic", "torchmetrics")
    import sys

    import ray
    import ray.cloudpickle
    import ray.train
    from ray.train.torch import TorchTrainer

    from hvt.train.ray_env import ensure_ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the worker needs no bench/ on its path
    repo = str(Path(__file__).resolve().parents[1])
    if not ray.is_initialized():  # the workers import hvt from this checkout (they inherit Ray's environment)
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
    ensure_ray(None)
    config = {"args": bench.args, "variant": bench.name(bench.check_variant), "use_gpu": use_gpu}
    outcome: dict[str, Any] = {}
    scratch = tempfile.mkdtemp(prefix="hvt-bench-ray-")

    def fit() -> None:
        try:
            trainer = TorchTrainer(_ray_worker, train_loop_config=config,
                                   scaling_config=ray.train.ScalingConfig(num_workers=1, use_gpu=use_gpu),
                                   run_config=ray.train.RunConfig(name="bench-paths", storage_path=scratch))
            outcome["result"] = trainer.fit().return_value
        except BaseException as err:  # noqa: BLE001 - reported by the row
            outcome["error"] = err

    thread = threading.Thread(target=fit, daemon=True)
    thread.start()
    thread.join(RAY_TIMEOUT_S)
    if thread.is_alive():
        raise TimeoutError(f"the Ray Train run did not finish within {RAY_TIMEOUT_S} s")
    ray.shutdown()
    if "error" in outcome:
        raise outcome["error"]
    return dict(outcome["result"] or {})


def _ray_worker(config: dict[str, Any]) -> dict[str, Any]:
    import ray.train.torch
    import torch.distributed as dist

    from hvt.model import create_model
    from hvt.model.halting import calibrate_halting_offset

    device = ray.train.torch.get_device()
    want = ("cuda", "nccl") if config["use_gpu"] else ("cpu", "gloo")
    if (device.type, dist.get_backend()) != want:
        raise AssertionError(f"Ray Train gave device {device} and backend {dist.get_backend()}, not {want}")
    if device.type == "cuda" and torch.cuda.current_device() != device.index:  # object collectives rely on it
        raise AssertionError(f"current CUDA device {torch.cuda.current_device()} is not the worker's {device}")
    shim = _Shim(config["args"], device)

    def model():
        torch.manual_seed(0)
        a = shim.args
        net = create_model(config["variant"], num_frames=a.frames, img_size=a.size, **a.overrides).to(device)
        calibrate_halting_offset(net.eval(), shim.clips(2), a.active_fraction, iters=8)
        net.set_halted_token_mode("remove")
        return net

    def wrap(net, kwargs):
        return ray.train.torch.prepare_model(net, parallel_strategy_kwargs=kwargs)

    evaluated = evaluator_check(shim, model().eval(), device)
    trained = training_check(shim, model().train(), device, wrap=wrap)
    return {"backend": dist.get_backend(), "eval_clips": evaluated["clips"], "train_loss": trained["loss"]}


class _Shim:
    """What the checks read from ``Bench``, inside a Ray worker."""

    def __init__(self, args, device: torch.device) -> None:
        self.args, self.dev = args, device

    def clips(self, batch: int) -> torch.Tensor:
        a = self.args
        return (torch.rand(batch, 3, a.frames, a.size, a.size) * 2 - 1).to(self.dev)


def cuda_rows(bench) -> None:
    """bf16 autocast, the nested-tensor attention and inductor compile (CUDA only)."""
    for check, fn in (("bf16 autocast", bf16_check), ("nested attention", nested_check),
                      ("inductor compile", compile_check)):
        if bench.dev.type != "cuda":
            bench.add({"section": "paths", "check": check, "status": NO_CUDA})
        else:
            row(bench, check, {}, lambda fn=fn: fn(bench))


def bf16_check(bench) -> dict[str, Any]:
    """A forward and backward pass in bf16 autocast: bf16 logits, finite loss and gradients. How far the logits
    are from fp32 is reported, not judged (a halting decision near its threshold may flip in bf16)."""
    model = bench.model(bench.check_variant, "remove").train()
    clips = bench.clips(bench.args.check_batch, seed=21)
    labels = torch.arange(clips.shape[0], device=bench.dev) % model.config.num_classes
    with torch.no_grad():
        ref = model(clips).logits.float()
    with bench.autocast(True):
        out = model(clips)
    loss = F.cross_entropy(out.logits.float(), labels) + out.ponder_loss.float()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if out.logits.dtype != torch.bfloat16 or not math.isfinite(float(loss.detach())):
        raise AssertionError(f"logits {out.logits.dtype}, loss {float(loss.detach())}")
    if not grads or not all(bool(torch.isfinite(g).all()) for g in grads):
        raise AssertionError(f"{len(grads)} gradients, not all finite")
    return {"rel_max_diff_vs_fp32": round(rel_diff(ref, out.logits), 6)}


def nested_check(bench) -> dict[str, Any]:
    """``remove`` mode with the nested (variable-length) kernel forced against the per-clip path: logits and
    gradients, fp32 and bf16."""
    from hvt.model import varlen

    model = bench.model(bench.check_variant, "remove").eval()  # eval: no dropout, both paths see the same net
    clips = bench.clips(bench.args.check_batch, seed=22)
    figures: dict[str, Any] = {}
    saved = varlen.BACKEND
    try:
        for bf16 in (False, True):
            runs = {}
            for backend in ("per_sample", "nested"):
                varlen.BACKEND, varlen.PATH_CALLS[backend] = backend, 0
                model.zero_grad(set_to_none=True)
                with bench.autocast(bf16):
                    logits = model(clips).logits.float()
                logits.square().mean().backward()
                grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
                runs[backend] = (logits.detach(), grad, varlen.PATH_CALLS[backend])
            tag = "bf16" if bf16 else "fp32"
            tol, grad_tol = (bench.tol_bf16, GRAD_TOL_BF16) if bf16 else (bench.tol_fp32, GRAD_TOL_FP32)
            rel = rel_diff(runs["per_sample"][0], runs["nested"][0])
            grad_rel = rel_diff(runs["per_sample"][1], runs["nested"][1])
            figures[f"{tag}_rel_max_diff"], figures[f"{tag}_grad_rel_max_diff"] = round(rel, 6), round(grad_rel, 6)
            if runs["nested"][2] == 0:
                raise AssertionError("the nested path never ran (every clip kept the same token count?)")
            if rel > tol or grad_rel > grad_tol:
                raise AssertionError(f"{tag}: nested vs per-clip logits differ by {rel:.4g} (tol {tol}), "
                                     f"gradients by {grad_rel:.4g} (tol {grad_tol})")
    finally:
        varlen.BACKEND = saved
    return figures


def compile_check(bench) -> dict[str, Any]:
    """``compile_blocks()`` with the bench's backend (inductor on the GPU) against eager, in every halted-token
    mode (inference, fp32)."""
    model = bench.model(bench.check_variant).eval()
    clips = bench.clips(bench.args.check_batch, seed=23)
    modes = ("official", "mask", "remove")
    eager = {}
    with torch.no_grad():
        for mode in modes:
            model.set_halted_token_mode(mode)
            eager[mode] = model(clips).logits.float()
        model.compile_blocks(backend=bench.args.compile_backend)
        figures = {}
        for mode in modes:
            model.set_halted_token_mode(mode)
            figures[f"{mode}_rel_max_diff"] = round(rel_diff(eager[mode], model(clips).logits), 6)
    worst = max(figures.values())
    if worst > TOL_COMPILE:
        raise AssertionError(f"compiled vs eager logits differ by up to {worst:.4g} (tol {TOL_COMPILE}): {figures}")
    return figures


def row(bench, check: str, label: dict[str, Any], fn) -> None:
    """Run ``fn`` as one ``paths`` row: ``ok`` with the figures it returns, its :class:`Skip` message, or the
    error (which fails the bench)."""
    def run() -> None:
        try:
            figures = fn()
        except Skip as skip:
            bench.add({"section": "paths", "check": check, **label, "status": str(skip)})
            return
        bench.add({"section": "paths", "check": check, **label, **figures, "status": "ok"})

    bench.guarded("paths", {"check": check, **label}, run)


def run_paths(bench) -> None:
    """Every ``paths`` row, in order."""
    process_group_rows(bench)
    ray_train_row(bench)
    cuda_rows(bench)
