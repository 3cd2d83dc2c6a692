"""The training step as an accelerator wants it: few host syncs, no redundant all-reduces, throughput and MFU.

One epoch (``train_one_epoch``) over micro-batches with gradient accumulation:

* DDP all-reduces gradients only on the micro-batch that ends an accumulation (``no_sync`` on the others);
  one batch of look-ahead tells the last micro-batch of the epoch apart, so a partial accumulation flushed at
  the end is all-reduced too.
* Losses, clip counts and the GFLOPs spent are summed in device tensors and read back once per log interval
  (one device-to-host sync per ``log_every_steps`` optimiser steps, and one at the epoch's end). Which clips
  failed to decode is decided on the host (``decode_ok`` stays on the CPU), so no sync there either.
* Per interval: clips/s, the share of the wall time spent waiting for the next batch, and the model FLOP
  utilisation (MFU). MFU = spent FLOP/s / peak bf16 FLOP/s of the device, where spent FLOPs = 3 x the forward
  FLOPs (forward + backward = 3 forward passes, the usual rule) and forward FLOPs = 2 x the multiply-adds each
  clip spent (``out.gflops`` counts multiply-adds, the paper's convention; peak tables count 2 FLOPs per
  multiply-add). Peaks come from ``PEAK_BF16_TFLOPS`` (dense, no sparsity) by device name, or from
  ``RuntimeSpec.peak_tflops``; unknown device (CPU included) and no override: MFU is not reported.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hvt.config import TrainConfig
from hvt.data import normalize_clips
from hvt.data.device_augment import DeviceAugment
from hvt.evaluation.evaluator import autocast  # one precision rule for training and evaluation
from hvt.model.mfu import PEAK_BF16_TFLOPS, peak_flops, training_flops
from hvt.store_faults import fault_point
from hvt.train.midepoch import EpochProgress, MidEpochCheckpoints

__all__ = ["PEAK_BF16_TFLOPS", "EpochStats", "compute_loss", "peak_flops", "split_batch", "train_one_epoch",
           "training_flops"]

log = logging.getLogger(__name__)

LOSS_NAMES = ("loss", "ce", "ponder", "motion")


def configure_backends(device: torch.device) -> None:
    """TF32 for the float32 matmuls and convolutions left outside autocast (CUDA only)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def split_batch(
    batch: dict[str, torch.Tensor], device: torch.device, with_static: bool, augment: DeviceAugment | None = None
):
    """Drop clips that failed to decode; return ``(x, y, motion_y, n_real, n_failed)``.

    ``decode_ok`` is read on the host (batches arrive on the CPU), so this makes no device sync; clips move to
    ``device`` as uint8 (non-blocking) and are normalised there to float ``[B', 3, T, H, W]``; with static clips
    ``B' = 2 n_real`` (real clips first). A batch of ``frames`` (``augment_on="device"``) is augmented on
    ``device`` by ``augment`` (the real clips, then the static clips built from one frame of each).
    """
    ok = np.asarray(batch["decode_ok"].cpu(), dtype=bool)  # input data on the host: reading it syncs nothing
    n_real = int(ok.sum())
    n_failed = ok.size - n_real
    idx = None if n_failed == 0 else torch.from_numpy(np.flatnonzero(ok))

    def keep(t: torch.Tensor) -> torch.Tensor:
        return t if idx is None else t.index_select(0, idx.to(t.device))

    def take(t: torch.Tensor) -> torch.Tensor:
        return keep(t).to(device, non_blocking=True)

    y = take(batch["label"]).long()
    motion_y = torch.ones(n_real, dtype=torch.long, device=device)
    if "frames" in batch:
        if augment is None:
            raise ValueError("a batch of frames (augment_on='device') needs the DeviceAugment of its DataConfig")
        frames = take(batch["frames"])  # uint8 [B, T, Ht, Wt, 3] on the device: the only transfer of pixels
        x = augment(frames, keep(batch["aug"]))
        if with_static and n_real:
            x = torch.cat([x, augment.static(frames, keep(batch["static_frame"]), keep(batch["static_aug"]))])
    else:
        x = normalize_clips(take(batch["clip"]))  # [B, 3, T, H, W] in [-1, 1]
        if with_static and n_real:
            x = torch.cat([x, normalize_clips(take(batch["static_clip"]))])
    if with_static and n_real:
        y = torch.cat([y, y])
        motion_y = torch.cat([motion_y, torch.zeros_like(motion_y)])
    return x, y, motion_y, n_real, n_failed


def _clip_size(batch: dict[str, Any], cfg: TrainConfig) -> tuple[int, int, int]:
    """(T, H, W) of one training clip of ``batch``."""
    if "frames" in batch:
        return batch["frames"].shape[-4], cfg.data.crop_size, cfg.data.crop_size
    return tuple(batch["clip"].shape[1:4])  # type: ignore[return-value]


def compute_loss(out: Any, y: torch.Tensor, motion_y: torch.Tensor, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """Class CE (static fakes weighted by ``static_class_loss_weight``) + ponder + motion CE; all scalars."""
    per_clip = F.cross_entropy(out.logits.float(), y, reduction="none")
    weights = torch.where(motion_y == 0, cfg.optim.static_class_loss_weight, 1.0).to(per_clip.dtype)
    ce = (per_clip * weights).sum() / weights.sum().clamp_min(1e-6)
    ponder = out.ponder_loss.float() * cfg.optim.ponder_weight_scale
    motion = torch.zeros((), device=ce.device)
    if out.motion_logits is not None and cfg.optim.motion_loss_weight > 0:
        motion = F.cross_entropy(out.motion_logits.float(), motion_y) * cfg.optim.motion_loss_weight
    return {"loss": ce + ponder + motion, "ce": ce, "ponder": ponder, "motion": motion}


@dataclass
class EpochStats:
    """What one pass over the training shard did: per-clip loss sums, clip counts, optimiser steps, timing."""

    sums: dict[str, float] = field(
        default_factory=lambda: {"loss": 0.0, "ce": 0.0, "ponder": 0.0, "motion": 0.0, "gflops": 0.0}
    )
    seen: int = 0
    failed: int = 0
    optimizer_steps: int = 0
    seconds: float = 0.0
    data_wait_seconds: float = 0.0
    forward_gmacs: float = 0.0  # multiply-adds (giga) of every forward pass, static clips included
    peak_flops: float | None = None

    @property
    def clips_per_s(self) -> float:
        return self.seen / max(self.seconds, 1e-9)

    @property
    def data_wait_share(self) -> float:
        return self.data_wait_seconds / max(self.seconds, 1e-9)

    @property
    def mfu(self) -> float | None:
        if not self.peak_flops:
            return None
        return training_flops(self.forward_gmacs) / max(self.seconds, 1e-9) / self.peak_flops

    def metrics(self, prefix: str = "train_") -> dict[str, float]:
        out = {f"{prefix}{name}": total / max(self.seen, 1) for name, total in self.sums.items()}
        out[f"{prefix}clips_per_s"] = self.clips_per_s
        out[f"{prefix}data_wait_share"] = self.data_wait_share
        out[f"{prefix}tflops_per_s"] = training_flops(self.forward_gmacs) / max(self.seconds, 1e-9) / 1e12
        if self.mfu is not None:
            out[f"{prefix}mfu"] = self.mfu
        return out


class _DeviceSums:
    """Running sums kept on the device: [loss, ce, ponder, motion] x clips, GFLOPs of real clips, clips,
    forward GMACs of all rows. ``read()`` is the one host sync."""

    def __init__(self, device: torch.device, start: tuple[float, ...] | None = None) -> None:
        self.values = torch.zeros(7, dtype=torch.float64, device=device)
        if start is not None:  # a resumed epoch: the sums at its checkpoint, bit for bit
            self.values.copy_(torch.tensor(start, dtype=torch.float64))

    def add(self, losses: dict[str, torch.Tensor], gflops: torch.Tensor, n_real: int) -> None:
        real = gflops[:n_real].detach().to(torch.float64)
        parts = [losses[name].detach().to(torch.float64) * n_real for name in LOSS_NAMES]
        parts += [real.sum(), real.new_tensor(float(n_real)), gflops.detach().to(torch.float64).sum()]
        self.values += torch.stack(parts)

    def read(self) -> list[float]:
        return self.values.tolist()


class _Lookahead:
    """Iterates ``items`` one ahead, so ``is_last`` is known for the item just returned; times each fetch."""

    def __init__(self, items: Iterable[Any]) -> None:
        self._it: Iterator[Any] = iter(items)
        self.wait = 0.0
        self._next = self._fetch()

    def _fetch(self) -> Any:
        started = time.perf_counter()
        try:
            return next(self._it)
        except StopIteration:
            return _END
        finally:
            self.wait += time.perf_counter() - started

    def __iter__(self) -> Iterator[tuple[Any, bool]]:
        while self._next is not _END:
            item = self._next
            self._next = self._fetch()
            yield item, self._next is _END


_END = object()


def _optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, cfg: TrainConfig):
    if cfg.optim.grad_clip_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def train_one_epoch(
    model: torch.nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    cfg: TrainConfig,
    device: torch.device,
    with_static: bool,
    on_interval: Callable[[dict[str, float]], None] | None = None,
    *,
    resume: EpochProgress | None = None,
    checkpoints: MidEpochCheckpoints | None = None,
) -> EpochStats:
    """One epoch over ``batches`` with gradient accumulation: every ``grad_accum_steps`` micro-batches make one
    optimiser step (each micro-batch loss is divided by ``grad_accum_steps``, so equal-sized micro-batches give the
    gradient of their union); a partial accumulation left at the end is flushed as one more step. DDP models
    all-reduce only on the micro-batch that steps. Every ``cfg.runtime.log_every_steps`` optimiser steps,
    ``on_interval`` gets that interval's figures (``clips_per_s``, ``data_wait_share``, ``mfu`` when the peak is
    known, mean ``loss``).

    ``resume``: the epoch's progress at a mid-epoch checkpoint; ``batches`` then starts after the micro-batches
    it consumed, and the epoch's figures continue from its sums and counts. ``checkpoints``: when and how to save
    this progress inside the epoch (``hvt.train.midepoch``)."""
    accum = cfg.optim.grad_accum_steps
    every = max(1, cfg.runtime.log_every_steps)
    stats = EpochStats(peak_flops=peak_flops(device, cfg.runtime.peak_tflops))
    sums = _DeviceSums(device, resume.sums if resume else None)
    no_sync = getattr(model, "no_sync", None)
    micro = 0
    before = EpochProgress(0, 0, (0.0,) * 7, 0)  # what earlier attempts did in this epoch
    if resume is not None:
        before, micro = resume, resume.micro_batches
        stats.optimizer_steps, stats.failed = resume.optimizer_steps, resume.failed
    model.train()
    optimizer.zero_grad(set_to_none=True)
    started = time.perf_counter()
    augment = DeviceAugment(cfg.data) if cfg.data.augment_on == "device" else None
    feed = _Lookahead(batches)
    interval = {"t": started, "wait": 0.0, "sums": list(before.sums), "steps": 0}
    for batch, is_last in feed:
        x, y, motion_y, n_real, n_failed = split_batch(batch, device, with_static, augment)
        stats.failed += n_failed
        if n_real == 0:
            # every clip of this batch failed to decode: still step in lockstep with the other DDP workers,
            # on a blank clip whose loss counts for nothing
            x = torch.zeros(1, 3, *_clip_size(batch, cfg), device=device)
            y = motion_y = torch.zeros(1, dtype=torch.long, device=device)
        micro += 1
        steps_now = micro % accum == 0 or is_last
        sync_ctx = no_sync() if (no_sync is not None and not steps_now) else nullcontext()
        with sync_ctx:
            with autocast(device):
                out = model(x)
            losses = compute_loss(out, y, motion_y, cfg)
            if n_real == 0:
                losses = {name: value * 0.0 for name, value in losses.items()}
            (losses["loss"] / accum).backward()
        if steps_now:
            _optimizer_step(model, optimizer, scheduler, cfg)
            stats.optimizer_steps += 1
            fault_point("train:step")  # fault tests stop a worker here ($HVT_FAULT_PAUSE_AT=train:step#n)
        if n_real:
            sums.add(losses, out.gflops, n_real)
        if steps_now and (stats.optimizer_steps % every == 0 or is_last) and on_interval is not None:
            _report_interval(sums.read(), feed.wait, interval, stats.optimizer_steps, stats.peak_flops, on_interval)
        if steps_now and not is_last and checkpoints is not None and checkpoints.due(stats.optimizer_steps):
            checkpoints.save(EpochProgress(
                micro, stats.optimizer_steps, tuple(sums.read()), stats.failed,
                before.seconds + time.perf_counter() - started, before.data_wait_seconds + feed.wait,
            ))
    totals = sums.read()
    for i, name in enumerate(LOSS_NAMES):
        stats.sums[name] = totals[i]
    stats.sums["gflops"] = totals[4]
    stats.seen = int(round(totals[5]))
    stats.forward_gmacs = totals[6]
    stats.seconds = before.seconds + time.perf_counter() - started
    stats.data_wait_seconds = before.data_wait_seconds + feed.wait
    return stats


def _report_interval(
    totals: list[float], wait: float, interval: dict[str, Any], steps: int, peak: float | None,
    on_interval: Callable[[dict[str, float]], None],
) -> None:
    now = time.perf_counter()
    seconds = max(now - interval["t"], 1e-9)
    delta = [a - b for a, b in zip(totals, interval["sums"], strict=True)]
    clips = delta[5]
    figures = {
        "step": float(steps),
        "clips_per_s": clips / seconds,
        "data_wait_share": (wait - interval["wait"]) / seconds,
        "loss": delta[0] / max(clips, 1.0),
        "tflops_per_s": training_flops(delta[6]) / seconds / 1e12,
    }
    if peak:
        figures["mfu"] = training_flops(delta[6]) / seconds / peak
    interval.update(t=now, wait=wait, sums=totals)
    if not all(math.isfinite(v) for v in figures.values()):
        log.warning("non-finite training figures at step %d: %s", steps, figures)
    on_interval(figures)


def compile_model(model: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile`` what benefits: a model with a ``compile_blocks()`` hook (HaltingVT: its fixed-shape
    per-token parts, leaving the data-dependent halting bookkeeping eager) compiles in place; any other model is
    wrapped whole."""
    hook = getattr(model, "compile_blocks", None)
    if callable(hook):
        hook()
        return model
    return torch.compile(model)


def ddp_kwargs(model: torch.nn.Module, cfg: TrainConfig) -> dict[str, Any]:
    """DDP options: ``find_unused_parameters`` only when some parameter may get no gradient in a step (a model
    that does not declare ``all_parameters_in_graph``, or a motion head whose loss is switched off); it costs a
    graph traversal every step."""
    in_graph = bool(getattr(model, "all_parameters_in_graph", False))
    motion_head = getattr(model, "motion_head", None)
    if motion_head is not None and cfg.optim.motion_loss_weight == 0:
        in_graph = False
    return {} if in_graph else {"find_unused_parameters": True}
