"""The per-worker training loop that Ray Train runs (one copy per DDP worker).

Loss = cross-entropy on real and static clips (the static fake keeps the class label)
     + the model's ponder loss + cross-entropy of the 2-way motion head (real = 1, static = 0).
Every epoch: validate on this worker's share of the val split (torchmetrics syncs across workers), then report
metrics and, from rank 0, a checkpoint. On start, resume from ``ray.train.get_checkpoint()`` when there is one;
``attempt_start_epoch`` in the metrics and the checkpoint says where the current attempt began (0 = fresh start),
which is how a restart after a crash can be told from a run that started over.
"""

from __future__ import annotations

import logging
import math
import random
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.nn.functional as F

from hvt.config import TrainConfig
from hvt.data import normalize_clips
from hvt.evaluation.evaluate import evaluate_batches
from hvt.evaluation.evaluator import Evaluator, autocast
from hvt.evaluation.metrics import ClipMetrics
from hvt.model import create_model, load_pretrained
from hvt.train.schedule import build_scheduler
from hvt.train.state import capture_rng, load_train_state, restore_rng, save_train_state, unwrap

log = logging.getLogger(__name__)

BATCH_COLUMNS = ("clip", "label", "decode_ok")


def _autocast(device: torch.device):
    return autocast(device)  # one precision rule for training and evaluation (hvt.evaluation.evaluator)


def seed_everything(seed: int) -> None:
    """Seed every RNG the loop touches (torch, Python, NumPy) so that a run is repeatable per worker."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam or AdamW (``cfg.optim.optimizer``) with weight decay on weight matrices only."""
    # no weight decay on biases, norms, tokens and embeddings (1-d parameters and *_embed / *_token)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(("_token", "_embed")):
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if cfg.optim.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.optim.lr)
    return torch.optim.Adam(groups, lr=cfg.optim.lr)


def make_optimization(model: torch.nn.Module, cfg: TrainConfig, steps_per_epoch: int):
    """The optimiser and its warm-up + cosine schedule (stepped once per optimiser step) for ``cfg.optim``,
    given how many micro-batches one epoch has on this worker."""
    optimizer = make_optimizer(model, cfg)
    optimizer_steps = math.ceil(steps_per_epoch / cfg.optim.grad_accum_steps)
    scheduler = build_scheduler(
        optimizer,
        warmup_steps=int(cfg.optim.warmup_epochs * optimizer_steps),
        total_steps=cfg.optim.epochs * optimizer_steps,
        min_ratio=cfg.optim.min_lr_ratio,
    )
    return optimizer, scheduler


def _split_batch(batch: dict[str, torch.Tensor], device: torch.device, with_static: bool):
    """Drop clips that failed to decode; return (x, y, motion_y, n_real, n_failed)."""
    ok = batch["decode_ok"].bool()
    n_failed = int((~ok).sum().item())
    clips = batch["clip"][ok]  # [B, T, H, W, 3] uint8
    labels = batch["label"][ok].long()
    n_real = clips.shape[0]
    x = normalize_clips(clips.to(device, non_blocking=True))  # [B, 3, T, H, W] in [-1, 1]
    y = labels.to(device)
    motion_y = torch.ones(n_real, dtype=torch.long, device=device)
    if with_static and n_real:
        static = normalize_clips(batch["static_clip"][ok].to(device, non_blocking=True))
        x = torch.cat([x, static])
        y = torch.cat([y, y])
        motion_y = torch.cat([motion_y, torch.zeros_like(motion_y)])
    return x, y, motion_y, n_real, n_failed


def compute_loss(out: Any, y: torch.Tensor, motion_y: torch.Tensor, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    # per-clip class loss; static fakes (motion label 0) are weighted by static_class_loss_weight
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
    """What one pass over the training shard did: per-clip loss sums, clip counts and optimiser steps."""

    sums: dict[str, float] = field(
        default_factory=lambda: {"loss": 0.0, "ce": 0.0, "ponder": 0.0, "motion": 0.0, "gflops": 0.0}
    )
    seen: int = 0
    failed: int = 0
    optimizer_steps: int = 0


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
) -> EpochStats:
    """One epoch over ``batches`` with gradient accumulation: every ``grad_accum_steps`` micro-batches make one
    optimiser step (each micro-batch loss is divided by ``grad_accum_steps``, so equal-sized micro-batches give the
    gradient of their union); a partial accumulation left at the end is flushed as one more step."""
    accum = cfg.optim.grad_accum_steps
    stats = EpochStats()
    micro = 0
    model.train()
    optimizer.zero_grad(set_to_none=True)
    for batch in batches:
        x, y, motion_y, n_real, n_failed = _split_batch(batch, device, with_static)
        stats.failed += n_failed
        if n_real == 0:
            # every clip of this batch failed to decode: still step in lockstep with the other DDP workers,
            # on a blank clip whose loss counts for nothing
            x = torch.zeros(1, 3, *batch["clip"].shape[1:4], device=device)
            y = motion_y = torch.zeros(1, dtype=torch.long, device=device)
        with _autocast(device):
            out = model(x)
        losses = compute_loss(out, y, motion_y, cfg)
        if n_real == 0:
            losses = {name: value * 0.0 for name, value in losses.items()}
        (losses["loss"] / accum).backward()
        micro += 1
        if micro % accum == 0:
            _optimizer_step(model, optimizer, scheduler, cfg)
            stats.optimizer_steps += 1
        for name in ("loss", "ce", "ponder", "motion"):
            stats.sums[name] += float(losses[name].detach()) * n_real
        stats.sums["gflops"] += float(out.gflops[:n_real].detach().float().sum())
        stats.seen += n_real
    if micro % accum:  # flush a partial accumulation at the epoch's end
        _optimizer_step(model, optimizer, scheduler, cfg)
        stats.optimizer_steps += 1
    return stats


def validate(model: torch.nn.Module, shard: Any, cfg: TrainConfig, num_classes: int, device: torch.device):
    """Metrics over this worker's share of the val split (its test views, ``cfg.val_views``) with the one
    evaluator; ``compute`` gathers every worker's share."""
    metrics = ClipMetrics(num_classes, device=device)
    batch_size = cfg.optim.batch_size * 2
    batches = shard.iter_torch_batches(batch_size=batch_size, drop_last=False)
    evaluate_batches(Evaluator(unwrap(model), device, max_clips=batch_size), batches, metrics)
    model.train()
    return metrics.compute()


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    cfg = TrainConfig.model_validate(loop_config["train_config"])
    num_classes = int(loop_config["num_classes"])
    manifest_sha256 = loop_config["manifest_sha256"]
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    if "train_samples" in loop_config:  # elastic runs learn their world size only here
        per_step = cfg.optim.batch_size * world_size
        steps_per_epoch = max(1, math.ceil(int(loop_config["train_samples"]) / per_step))
    else:
        steps_per_epoch = max(1, int(loop_config["steps_per_epoch"]))
    seed_everything(cfg.seed + rank)
    device = ray.train.torch.get_device()

    model = create_model(cfg.model.name, num_classes=num_classes, **cfg.model.overrides)
    checkpoint = ray.train.get_checkpoint()
    if cfg.model.pretrained and checkpoint is None:  # a resumed run continues from its checkpoint instead
        load_pretrained(model, cfg.model.pretrained)
    model_config = model.config.to_dict()
    optimizer, scheduler = make_optimization(model, cfg, steps_per_epoch)
    start_epoch, global_step, best_top1 = 0, 0, -1.0
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_train_state(directory)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, global_step = int(state["epoch"]) + 1, int(state["step"])
        best_top1 = float(state.get("best_val_top1", -1.0))
        restore_rng(state["rng"])
        seed_everything(cfg.seed + rank + 1000 * start_epoch)
        log.info("rank %d resumed from epoch %d (step %d)", rank, start_epoch, global_step)
    # In `remove` mode a sample whose tokens all halted early leaves later blocks without gradient, so DDP
    # must tolerate parameters that got none in a step (otherwise the workers wait on each other forever).
    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    with_static = bool(cfg.data.static_clips)
    attempt_start_epoch = start_epoch
    for epoch in range(start_epoch, cfg.optim.epochs):
        started = time.perf_counter()
        batches = train_shard.iter_torch_batches(batch_size=cfg.optim.batch_size, drop_last=False)
        stats = train_one_epoch(model, batches, optimizer, scheduler, cfg, device, with_static)
        global_step += stats.optimizer_steps
        sums, seen, failed = stats.sums, stats.seen, stats.failed
        train_seconds = time.perf_counter() - started
        val = validate(model, val_shard, cfg, num_classes, device)
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "attempt_start_epoch": attempt_start_epoch,
            "step": global_step,
            "lr": scheduler.get_last_lr()[0],
            "train_clips": seen,
            "train_clips_per_s": seen / max(train_seconds, 1e-9),
            "train_decode_failures": failed,
            "val_top1": val.get("top1", 0.0),
            "val_top5": val.get("top5", 0.0),
            "val_gflops": val.get("gflops_mean", 0.0),
            "val_clips": val.get("clips", 0),
            "val_decode_failures": val.get("decode_failures", 0),
        }
        for name, total in sums.items():
            metrics[f"train_{name}"] = total / max(seen, 1)
        best_top1 = max(best_top1, metrics["val_top1"])
        if rank == 0:
            log.info("epoch %d: %s", epoch, {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
            with tempfile.TemporaryDirectory() as directory:
                save_train_state(
                    directory,
                    {
                        "model": unwrap(model).state_dict(),
                        "model_config": model_config,
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "epoch": epoch,
                        "step": global_step,
                        "best_val_top1": best_top1,
                        "attempt_start_epoch": attempt_start_epoch,
                        "rng": capture_rng(),
                        "train_config": cfg.model_dump(mode="json"),
                        "num_classes": num_classes,
                        "manifest_sha256": manifest_sha256,
                    },
                )
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
        else:
            ray.train.report(metrics)
