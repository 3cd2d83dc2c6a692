"""Mid-epoch checkpoints: what an epoch has done so far, and how a run resumes at an optimiser step inside it.

With ``runtime.checkpoint_every_steps = N`` the loop checkpoints every N optimiser steps (global steps that are
multiples of N), besides the checkpoint at each epoch's end, so a lost worker or a reclaimed spot node costs at
most N steps instead of up to an epoch. Such a checkpoint holds, besides the model / optimiser / scheduler / RNG
state every checkpoint holds, each rank's :class:`EpochProgress`: the micro-batches it consumed, the optimiser
steps taken and the running loss sums and counts of the epoch. A resumed rank restores its progress, skips the
micro-batches it had consumed (the epoch's data replays exactly: ``hvt.train.worker_data.TrainSplits``) and
carries on, so the epoch ends with the statistics an unbroken run reports.

Ray Train keeps ``num_to_keep`` checkpoints ranked by ``val_top1`` and never deletes the newest one (what a
restart resumes from). A mid-epoch checkpoint has no fresh validation: it reports ``val_top1 =``
:data:`MID_EPOCH_SCORE`, below any accuracy, so it ranks under every end-of-epoch checkpoint. Hence it is never
the best checkpoint, older mid-epoch checkpoints are the first the keep policy deletes (at most
``num_to_keep`` + 1 checkpoints stay), and they never push out an end-of-epoch checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch.distributed as dist

log = logging.getLogger(__name__)

MID_EPOCH_SCORE = -1.0  # val_top1 of a mid-epoch checkpoint: below any accuracy, and plain JSON (unlike -inf)

SUM_FIELDS = 7  # hvt.train.step._DeviceSums: [loss, ce, ponder, motion] x clips, GFLOPs, clips, forward GMACs


@dataclass(frozen=True)
class EpochProgress:
    """One rank's progress through an epoch, at an optimiser-step boundary (no gradient is half accumulated)."""

    micro_batches: int  # training batches this rank has consumed in the epoch
    optimizer_steps: int
    sums: tuple[float, ...]  # the running device sums, in float64 (restored bit for bit)
    failed: int  # clips that failed to decode so far
    seconds: float = 0.0  # wall time spent so far (timing figures only)
    data_wait_seconds: float = 0.0

    def to_state(self) -> dict[str, Any]:
        """Plain Python values (what ``torch.load(weights_only=True)`` reads back)."""
        return {"micro_batches": self.micro_batches, "optimizer_steps": self.optimizer_steps,
                "sums": [float(v) for v in self.sums], "failed": self.failed, "seconds": self.seconds,
                "data_wait_seconds": self.data_wait_seconds}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EpochProgress:
        sums = tuple(float(v) for v in state["sums"])
        if len(sums) != SUM_FIELDS:
            raise ValueError(f"epoch progress holds {len(sums)} sums, expected {SUM_FIELDS}")
        return cls(int(state["micro_batches"]), int(state["optimizer_steps"]), sums, int(state["failed"]),
                   float(state.get("seconds", 0.0)), float(state.get("data_wait_seconds", 0.0)))


@dataclass(frozen=True)
class MidEpochCheckpoints:
    """When ``train_one_epoch`` checkpoints inside an epoch: after optimiser steps whose global number (steps
    before this epoch + steps in it) is a multiple of ``every``, except the epoch's last step (its end-of-epoch
    checkpoint follows at once). ``save`` gets this rank's progress; every rank calls it at the same step."""

    every: int
    epoch_start_step: int
    save: Callable[[EpochProgress], None]

    def due(self, steps_in_epoch: int) -> bool:
        return (self.epoch_start_step + steps_in_epoch) % self.every == 0


def resume_progress(saved: list[dict[str, Any]], rank: int, world_size: int) -> EpochProgress:
    """This rank's progress from a mid-epoch checkpoint's per-rank list.

    The same world size resumes exactly where the rank stood. Another world size (an elastic run that lost or
    gained workers) cannot: the split hands each rank other rows. Then every rank skips an equal share of the
    micro-batches consumed over all the old ranks (rounded down, so a few clips may be seen twice, none missed),
    and rank 0 carries the old ranks' sums and counts, which the epoch-end totals add up over ranks anyway.
    """
    progresses = [EpochProgress.from_state(s) for s in saved]
    if len(progresses) == world_size:
        return progresses[rank]
    log.warning("rank %d: mid-epoch checkpoint from %d workers, now %d: the epoch resumes approximately",
                rank, len(progresses), world_size)
    first = progresses[0]
    skip = sum(p.micro_batches for p in progresses) // world_size
    if rank != 0:
        return replace(first, micro_batches=skip, sums=(0.0,) * SUM_FIELDS, failed=0)
    sums = tuple(sum(p.sums[i] for p in progresses) for i in range(SUM_FIELDS))
    return replace(first, micro_batches=skip, sums=sums, failed=sum(p.failed for p in progresses))


def skip_batches(batches: Iterable[Any], count: int) -> Iterator[Any]:
    """``batches`` without its first ``count`` items (the micro-batches a resumed epoch consumed before its
    checkpoint). Fewer than ``count`` means the data is not what the checkpoint was trained on: ValueError."""
    it = iter(batches)
    for skipped in range(count):
        if next(it, _END) is _END:
            raise ValueError(f"the epoch's training data ended after {skipped} batches, but the checkpoint it "
                             f"resumes from had consumed {count}: the data differs from the checkpointed run's")
    yield from it


_END = object()


def wait_until_committed(step: int, timeout_s: float = 30.0) -> None:
    """Block until Ray Train has committed the checkpoint just reported (the one of global step ``step``).

    A report waits in the worker's one-slot queue until the controller polls it (every few seconds), and the
    worker trains on meanwhile; a worker lost then takes the queued checkpoint with it, so a restart would go
    back to the one before: up to 2 N steps lost (measured: a SIGTERM at step 8 resumed from 8 after the
    worker had reached 12 with N = 2). Waiting here (a few seconds per mid-epoch checkpoint) keeps the promise
    of at most N. The wait is bounded because it can never end when another worker is going away: a worker
    that received SIGTERM answers no more polls, so its share of the report is never collected; training then
    goes on after ``timeout_s``, with a warning, until Ray Train restarts the group.
    """
    import ray.train

    get_reported = getattr(ray.train, "get_all_reported_checkpoints", None)
    if get_reported is None:  # a Ray Train without the call: no way to wait
        return
    reported = get_reported(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED, timeout_s=timeout_s)
    if not any(r.metrics.get("step") == step for r in reported):
        log.warning("the checkpoint of step %d was not committed within %.0f s: a failure now may lose more than "
                    "runtime.checkpoint_every_steps steps", step, timeout_s)


def gather_per_rank(value: Any) -> list[Any]:
    """``value`` of every rank, in rank order (all ranks must call this)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values
