"""The per-worker training loop that Ray Train runs (one copy per DDP worker).

Loss = cross-entropy on real and static clips (the static fake keeps the class label)
     + the model's ponder loss + cross-entropy of the 2-way motion head (real = 1, static = 0).
Every epoch: validate on this worker's share of the val split (torchmetrics syncs across workers), then report
metrics and, from rank 0, a checkpoint; with ``runtime.checkpoint_every_steps`` also every N optimiser steps
inside the epoch (``hvt.train.midepoch``). On start, resume from ``ray.train.get_checkpoint()`` (the newest
checkpoint) when there is one: after its epoch, or inside it at its step for a mid-epoch checkpoint.
``attempt_start_epoch`` in the metrics and the checkpoint, and ``attempt_start_step`` in the checkpoint, say where
the current attempt began (0 = fresh start), which is how a restart after a crash can be told from a run that
started over.
"""

from __future__ import annotations

import logging
import math
import random
import tempfile
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch

from hvt.collectives import gather_objects, mean_over_ranks, sum_over_ranks
from hvt.config import TrainConfig
from hvt.evaluation.evaluate import evaluate_batches
from hvt.evaluation.evaluator import Evaluator
from hvt.evaluation.metrics import ClipMetrics
from hvt.model import create_model, load_pretrained
from hvt.train.midepoch import (
    MID_EPOCH_SCORE,
    EpochProgress,
    MidEpochCheckpoints,
    gather_per_rank,
    resume_progress,
    wait_until_committed,
)
from hvt.train.schedule import build_scheduler
from hvt.train.state import capture_rng, load_train_state, restore_rng, save_train_state, unwrap
from hvt.train.step import (
    EpochStats,
    compile_model,
    compute_loss,
    configure_backends,
    ddp_kwargs,
    train_one_epoch,
)
from hvt.train.warm_start import init_weights
from hvt.train.worker_data import TrainSplits, ValBatches, val_iterator
from hvt.tune.tracking import Tracker, epoch_metrics

__all__ = ["EpochStats", "compute_loss", "make_optimization", "seed_everything", "train_one_epoch",
           "train_loop_per_worker"]

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed every RNG the loop touches (torch, Python, NumPy) so that a run is repeatable per worker."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, fused: bool | None = None) -> torch.optim.Optimizer:
    """Adam or AdamW (``cfg.optim.optimizer``) with weight decay on weight matrices only; the fused (one kernel
    per step) implementation when every parameter is on CUDA (``fused=None``), or as ``fused`` says."""
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
    if fused is None:
        fused = bool(decay or no_decay) and all(p.is_cuda for p in decay + no_decay)
    extra = {"fused": True} if fused else {}
    if cfg.optim.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.optim.lr, **extra)
    return torch.optim.Adam(groups, lr=cfg.optim.lr, **extra)


def make_optimization(model: torch.nn.Module, cfg: TrainConfig, steps_per_epoch: int):
    """The optimiser and its warm-up + cosine schedule (stepped once per optimiser step) for ``cfg.optim``,
    given how many micro-batches one epoch has on this worker. Move the model to its device first (the fused
    optimiser needs its parameters there)."""
    optimizer = make_optimizer(model, cfg)
    optimizer_steps = math.ceil(steps_per_epoch / cfg.optim.grad_accum_steps)
    scheduler = build_scheduler(
        optimizer,
        warmup_steps=int(cfg.optim.warmup_epochs * optimizer_steps),
        total_steps=cfg.optim.epochs * optimizer_steps,
        min_ratio=cfg.optim.min_lr_ratio,
    )
    return optimizer, scheduler


def validate(model: torch.nn.Module, val: ValBatches, cfg: TrainConfig, num_classes: int, device: torch.device):
    """Metrics over this worker's share of the val split (its test views, ``cfg.val_views``) with the one
    evaluator; ``compute`` gathers every worker's share. Every rank calls this once per epoch."""
    metrics = ClipMetrics(num_classes, device=device)
    evaluate_batches(Evaluator(unwrap(model), device, max_clips=val.batch_size), val.batches(), metrics)
    val.end_epoch()
    model.train()
    return metrics.compute()


def _gather_rng() -> list[dict[str, Any]]:
    """Every rank's RNG state, in rank order (all ranks must call this)."""
    return gather_objects(capture_rng())


def _restore_rank_rng(saved: Any, rank: int, world_size: int, cfg: TrainConfig, epoch: int) -> None:
    """Put back this rank's RNG state from the checkpoint, exactly where the unbroken run would be. A checkpoint
    from another world size (elastic) or an older one (one state) cannot do that: seed from (seed, rank, epoch)."""
    if isinstance(saved, list) and len(saved) == world_size:
        restore_rng(saved[rank])
        return
    log.warning("rank %d: checkpoint RNG is for another world size; seeding from (seed, rank, epoch)", rank)
    seed_everything(cfg.seed + rank + 1000 * epoch)


def _quiet_report_logging() -> None:
    """Ray Train logs every ``ray.train.report`` call, the whole metrics dict, at INFO from each worker (a logger
    named after its source file): it buries the one progress line per epoch. Keep its warnings."""
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray Train layout: leave its logging alone
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    cfg = TrainConfig.model_validate(loop_config["train_config"])
    _quiet_report_logging()
    num_classes = int(loop_config["num_classes"])
    manifest_sha256 = loop_config["manifest_sha256"]
    context = ray.train.get_context()
    rank, workers = context.get_world_rank(), context.get_world_size()
    if "train_samples" in loop_config:  # elastic runs learn their world size only here
        per_step = cfg.optim.batch_size * workers
        steps_per_epoch = max(1, math.ceil(int(loop_config["train_samples"]) / per_step))
    else:
        steps_per_epoch = max(1, int(loop_config["steps_per_epoch"]))
    seed_everything(cfg.seed + rank)
    # CPU kernels split their reductions by thread, so the thread count is part of what a run computes: fix it
    # to the worker's CPU share (not whatever the process inherited) so the same config gives the same numbers.
    torch.set_num_threads(max(1, int(cfg.scaling.cpus_per_worker)))
    device = ray.train.torch.get_device()
    configure_backends(device)

    model = create_model(cfg.model.name, num_classes=num_classes, **cfg.model_overrides())
    checkpoint = ray.train.get_checkpoint()
    if cfg.model.pretrained and checkpoint is None:  # a resumed run continues from its checkpoint instead
        load_pretrained(model, cfg.model.pretrained)
    if cfg.model.init_from and checkpoint is None:  # warm start from a registered version (pinned by the driver)
        load_pretrained(model, init_weights(cfg))
    model_config = model.config.to_dict()
    model.to(device)
    optimizer, scheduler = make_optimization(model, cfg, steps_per_epoch)
    start_epoch, global_step, best_top1 = 0, 0, -1.0
    saved_rng, resume = None, None
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_train_state(directory)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, global_step = int(state["epoch"]) + 1, int(state["step"])
        if state.get("epoch_progress"):  # a mid-epoch checkpoint: resume inside its epoch, at its step
            resume = resume_progress(state["epoch_progress"], rank, workers)
            start_epoch, global_step = int(state["epoch"]), global_step - resume.optimizer_steps
        best_top1 = float(state.get("best_val_top1", -1.0))
        saved_rng = state.get("rng_per_rank", state["rng"])
        log.info("rank %d resumed from epoch %d, %d steps into it (step %d)", rank, start_epoch,
                 resume.optimizer_steps if resume else 0, int(state["step"]))
    if cfg.runtime.compile:
        model = compile_model(model)
    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs=ddp_kwargs(unwrap(model), cfg))
    if saved_rng is not None:  # after everything that may draw random numbers while setting up
        _restore_rank_rng(saved_rng, rank, workers, cfg, start_epoch)

    val_batches = ValBatches(val_iterator(loop_config, cfg), cfg.optim.batch_size * 2,
                             int(cfg.runtime.val_cache_mb * 2**20), device)
    train_splits = TrainSplits(loop_config, cfg, device, first_epoch=start_epoch)
    with_static = bool(cfg.data.static_clips)
    attempt_start_epoch = start_epoch
    attempt_start_step = global_step + (resume.optimizer_steps if resume else 0)
    # rank 0 logs each epoch to the run's MLflow run (opened by the driver; none when tracking is off)
    tracking = loop_config.get("tracking") or {}
    tracking_run_id = tracking.get("run_id") if rank == 0 else None
    tracker = Tracker(tracking.get("uri") if tracking_run_id else None)

    def log_interval(figures: dict[str, float]) -> None:
        if rank == 0:
            log.info("epoch %d step %d: %s", epoch, int(figures.pop("step")),
                     ", ".join(f"{k} {v:.4g}" for k, v in figures.items()))

    def report(metrics: dict[str, Any], step: int, rng_states: list[Any], **extra: Any) -> None:
        """Report ``metrics``; rank 0 with a checkpoint of the current state (all ranks must call this)."""
        if rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as directory:
            save_train_state(directory, {
                "model": unwrap(model).state_dict(),
                "model_config": model_config,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "step": step,
                "best_val_top1": best_top1,
                "attempt_start_epoch": attempt_start_epoch,
                "attempt_start_step": attempt_start_step,
                "rng": rng_states[0],
                "rng_per_rank": rng_states,
                "metrics": _plain(metrics),
                "train_config": cfg.model_dump(mode="json"),
                "num_classes": num_classes,
                "manifest_sha256": manifest_sha256,
                **extra,
            })
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))

    def save_mid_epoch(progress: EpochProgress) -> None:
        # every rank's RNG and progress: a resumed rank continues exactly where it stood
        rng_states, progress_per_rank = _gather_rng(), gather_per_rank(progress.to_state())
        step = global_step + progress.optimizer_steps
        metrics = {"epoch": epoch, "attempt_start_epoch": attempt_start_epoch, "step": step,
                   "epoch_step": progress.optimizer_steps, "mid_epoch": 1, "val_top1": MID_EPOCH_SCORE}
        if rank == 0:
            log.info("epoch %d step %d: mid-epoch checkpoint (step %d)", epoch, progress.optimizer_steps, step)
        report(metrics, step, rng_states, epoch_progress=progress_per_rank)
        if rank == 0:  # the others wait for rank 0 at the next step's gradient all-reduce
            wait_until_committed(step)

    every = cfg.runtime.checkpoint_every_steps
    batches: Any = []
    if start_epoch < cfg.optim.epochs:
        batches = train_splits.batches(start_epoch, skip=resume.micro_batches if resume else 0)
    for epoch in range(start_epoch, cfg.optim.epochs):
        mid_epoch = MidEpochCheckpoints(every, global_step, save_mid_epoch) if every else None
        stats = train_one_epoch(model, batches, optimizer, scheduler, cfg, device, with_static, log_interval,
                                resume=resume, checkpoints=mid_epoch)
        resume = None
        if epoch + 1 < cfg.optim.epochs:  # the next epoch decodes while this one validates and checkpoints
            batches = train_splits.batches(epoch + 1)
        global_step += stats.optimizer_steps
        val = validate(model, val_batches, cfg, num_classes, device)
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "attempt_start_epoch": attempt_start_epoch,
            "step": global_step,
            "lr": scheduler.get_last_lr()[0],
            "val_top1": val.get("top1", 0.0),
            "val_top5": val.get("top5", 0.0),
            "val_gflops": val.get("gflops_mean", 0.0),
            "val_clips": val.get("clips", 0),
            "val_decode_failures": val.get("decode_failures", 0),
        }
        metrics.update(stats.metrics("train_"))
        best_top1 = max(best_top1, metrics["val_top1"])
        rng_states = _gather_rng()  # every rank takes part; rank 0 saves them
        metrics["train_loss"] = mean_over_ranks(metrics["train_loss"], stats.seen, device)
        # counts are the run's, not rank 0's share: rank 0 alone reports them
        metrics["train_clips"], metrics["train_decode_failures"] = sum_over_ranks([stats.seen, stats.failed], device)
        if rank == 0:
            log.info("%s", progress_line(metrics, cfg.optim.epochs))
            log.debug("epoch %d: %s", epoch, {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
            tracker.log_metrics(tracking_run_id, epoch_metrics(metrics), step=epoch)
        report(metrics, global_step, rng_states)


def progress_line(metrics: dict[str, Any], epochs: int) -> str:
    """One line per epoch: ``epoch 3/40: loss 1.234, val top-1 0.560, 0.0527 GFLOPs/clip, 41.3 clips/s``
    (loss: mean training loss per clip over every worker; GFLOPs: mean per val clip as spent; clips/s: this
    worker's training clips per second of the epoch, decoding waits included)."""
    return (
        f"epoch {int(metrics['epoch']) + 1}/{epochs}: loss {metrics['train_loss']:.3f}, "
        f"val top-1 {metrics['val_top1']:.3f}, {metrics['val_gflops']:.4f} GFLOPs/clip, "
        f"{metrics['train_clips_per_s']:.1f} clips/s"
    )


def _plain(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics as floats (what ``torch.load(weights_only=True)`` reads back)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
