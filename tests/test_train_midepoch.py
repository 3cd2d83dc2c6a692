"""Mid-epoch checkpoints (``runtime.checkpoint_every_steps``) without a training run: the partial-epoch state saves
and restores bit for bit, checkpoints fall on the right steps, and Ray Train's keep policy never takes a mid-epoch
checkpoint for the best one, never deletes the newest one and keeps a bounded number of them.

The runs killed between two mid-epoch checkpoints (SIGKILL, and SIGTERM as a spot notice) are in
``tests/test_train_faults.py``.
"""

from __future__ import annotations

import asyncio
import io
from types import SimpleNamespace

import pytest
import torch

from hvt.config import OptimConfig, RuntimeSpec, TrainConfig
from hvt.train.midepoch import (
    MID_EPOCH_SCORE,
    EpochProgress,
    MidEpochCheckpoints,
    resume_progress,
    skip_batches,
)
from hvt.train.state import capture_rng, restore_rng
from hvt.train.step import train_one_epoch

FEATURES, CLASSES = 3 * 2 * 4 * 4, 3


class DropoutClipModel(torch.nn.Module):
    """A linear clip classifier behind dropout: its output depends on the torch RNG, so a resume that does not
    put the RNG back where the unbroken run had it gives other numbers."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = torch.nn.Dropout(0.3)
        self.fc = torch.nn.Linear(FEATURES, CLASSES)

    def forward(self, x: torch.Tensor) -> SimpleNamespace:  # x [B, 3, T, H, W]
        logits = self.fc(self.drop(x.flatten(1)))
        ponder = logits.square().mean() * 1e-3
        return SimpleNamespace(logits=logits, motion_logits=None, ponder_loss=ponder,
                               gflops=torch.full((x.shape[0],), 1.5))


def _batches(n: int, size: int = 3) -> list[dict[str, torch.Tensor]]:
    """``n`` batches of random clips; one clip of every third batch failed to decode."""
    gen = torch.Generator().manual_seed(1)
    out = []
    for i in range(n):
        ok = torch.ones(size, dtype=torch.bool)
        if i % 3 == 2:
            ok[0] = False
        out.append({"clip": torch.randint(0, 256, (size, 2, 4, 4, 3), generator=gen, dtype=torch.uint8),
                    "label": torch.randint(0, CLASSES, (size,), generator=gen), "decode_ok": ok})
    return out


def _setup(cfg: TrainConfig):
    torch.manual_seed(0)
    model = DropoutClipModel()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    return model, optimizer, scheduler


def _config(accum: int = 2) -> TrainConfig:
    return TrainConfig(optim=OptimConfig(grad_accum_steps=accum, grad_clip_norm=1.0),
                       runtime=RuntimeSpec(checkpoint_every_steps=2))


def _through_a_file(value):
    """``value`` saved and loaded the way a checkpoint is (``torch.load(weights_only=True)``)."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _comparable(stats) -> dict:
    """What an epoch reports that must not depend on being resumed (not the timing figures)."""
    metrics = {k: v for k, v in stats.metrics().items()
               if k not in ("train_clips_per_s", "train_data_wait_share", "train_tflops_per_s")}
    return {**metrics, "seen": stats.seen, "failed": stats.failed, "steps": stats.optimizer_steps}


def test_an_epoch_resumed_at_a_mid_epoch_checkpoint_ends_as_the_unbroken_epoch():
    cfg, batches = _config(accum=2), _batches(11)  # 11 micro-batches: 6 optimiser steps, the last one flushed
    model, optimizer, scheduler = _setup(cfg)
    saved: list[dict] = []

    def save(progress: EpochProgress) -> None:  # what the loop's checkpoint holds, through a file
        saved.append(_through_a_file({
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng": capture_rng(), "progress": progress.to_state(),
        }))

    unbroken = train_one_epoch(model, batches, optimizer, scheduler, cfg, torch.device("cpu"), with_static=False,
                               checkpoints=MidEpochCheckpoints(2, 0, save))
    # steps 2 and 4 inside the epoch; step 6 is the epoch's last (its end-of-epoch checkpoint follows)
    assert [s["progress"]["optimizer_steps"] for s in saved] == [2, 4]
    assert [s["progress"]["micro_batches"] for s in saved] == [4, 8]

    state = saved[1]
    resumed_model, resumed_opt, resumed_sched = _setup(cfg)
    resumed_model.load_state_dict(state["model"])
    resumed_opt.load_state_dict(state["optimizer"])
    resumed_sched.load_state_dict(state["scheduler"])
    torch.manual_seed(123)  # the new process's RNG is somewhere else entirely
    restore_rng(state["rng"])
    progress = EpochProgress.from_state(state["progress"])
    resumed = train_one_epoch(resumed_model, skip_batches(batches, progress.micro_batches), resumed_opt,
                              resumed_sched, cfg, torch.device("cpu"), with_static=False, resume=progress)

    assert _comparable(resumed) == _comparable(unbroken)
    for name, value in model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[name], value), name
    assert resumed_sched.state_dict() == scheduler.state_dict()

    # each part of the state matters: without the epoch's partial statistics the epoch reports only its tail,
    # and without the RNG the weights differ
    lost_stats_model, lost_opt, lost_sched = _setup(cfg)
    lost_stats_model.load_state_dict(state["model"])
    lost_opt.load_state_dict(state["optimizer"])
    lost_sched.load_state_dict(state["scheduler"])
    torch.manual_seed(123)
    forgetful = train_one_epoch(lost_stats_model, skip_batches(batches, progress.micro_batches), lost_opt,
                                lost_sched, cfg, torch.device("cpu"), with_static=False)
    assert forgetful.seen < unbroken.seen
    assert not torch.equal(lost_stats_model.fc.weight, model.fc.weight)


def test_checkpoints_fall_on_global_multiples_of_n():
    cfg = _config(accum=1)
    model, optimizer, scheduler = _setup(cfg)
    steps: list[int] = []
    # the epoch starts at global step 5: with N = 3 the global steps 6 and 9 are inside it, 12 is its last
    train_one_epoch(model, _batches(7), optimizer, scheduler, cfg, torch.device("cpu"), with_static=False,
                    checkpoints=MidEpochCheckpoints(3, 5, lambda p: steps.append(5 + p.optimizer_steps)))
    assert steps == [6, 9]


def test_progress_for_another_world_size_skips_an_equal_share_and_keeps_every_count():
    ranks = [EpochProgress(6, 3, tuple(float(i + r) for i in range(7)), r, 1.0, 0.5).to_state() for r in range(2)]
    assert resume_progress(ranks, 1, 2) == EpochProgress.from_state(ranks[1])
    # 2 -> 3 workers: 12 micro-batches were consumed over the old ranks, so each new rank skips 4
    new = [resume_progress(ranks, r, 3) for r in range(3)]
    assert [p.micro_batches for p in new] == [4, 4, 4]
    assert [p.optimizer_steps for p in new] == [3, 3, 3]
    assert sum(p.failed for p in new) == 1
    for i in range(7):  # the epoch-end totals add up over ranks: nothing counted twice or lost
        assert sum(p.sums[i] for p in new) == sum(r["sums"][i] for r in ranks)


def test_skipping_more_batches_than_the_epoch_has_is_an_error():
    assert list(skip_batches(range(5), 2)) == [2, 3, 4]
    with pytest.raises(ValueError, match="ended after 5 batches"):
        list(skip_batches(range(5), 6))


def test_training_split_skips_the_batches_a_resumed_epoch_consumed(monkeypatch):
    """``TrainSplits.batches(epoch, skip=k)`` (the first epoch of a resumed attempt) yields the epoch's batches
    from the (k+1)-th on; the next epoch is whole again."""
    from hvt.train import worker_data

    class FakeSplit:
        def iter_torch_batches(self, **kwargs):
            return iter(range(7))

    cfg = TrainConfig(store="/tmp/unused", dataset_name="d", optim=OptimConfig(epochs=3))
    splits = worker_data.TrainSplits({"dataset_path": "/tmp/unused"}, cfg, torch.device("cpu"), first_epoch=1)
    monkeypatch.setattr(splits, "_split", lambda first_epoch, workers: [FakeSplit()])
    assert list(splits.batches(1, skip=4)) == [4, 5, 6]
    assert list(splits.batches(2)) == list(range(7))


def test_checkpoint_every_flag_builds_the_config_and_leaves_the_run_name(tmp_path):
    import argparse

    from pydantic import ValidationError

    from hvt.commands.train import add_train_config_arguments, train_config_from_args

    parser = argparse.ArgumentParser()
    add_train_config_arguments(parser)
    plain = train_config_from_args(parser.parse_args(["--store", str(tmp_path)]))
    often = train_config_from_args(parser.parse_args(["--store", str(tmp_path), "--checkpoint-every", "50"]))
    assert plain.runtime.checkpoint_every_steps is None and often.runtime.checkpoint_every_steps == 50
    # how often a run checkpoints is not what it computes: the same run (it resumes the other's checkpoints)
    assert plain.resolved_run_name("v1") == often.resolved_run_name("v1")
    with pytest.raises(ValidationError):
        RuntimeSpec(checkpoint_every_steps=0)


# ------------------------------------------------------------------ Ray Train's keep policy


def test_ray_keep_policy_never_picks_or_deletes_what_it_must_not(tmp_path):
    """Ray Train 2.x's checkpoint manager, fed the reports the loop makes (end-of-epoch with their val top-1,
    mid-epoch with ``MID_EPOCH_SCORE``): the best checkpoint is an end-of-epoch one, the newest checkpoint (what
    a restart resumes from) always stays, and no more than ``num_to_keep`` + 1 stay."""
    from ray.train import Checkpoint, CheckpointConfig
    from ray.train.v2._internal.execution.checkpoint.checkpoint_manager import CheckpointManager
    from ray.train.v2._internal.execution.storage import StorageContext
    from ray.train.v2._internal.execution.training_report import _TrainingReport
    from ray.train.v2.api.result import Result

    keep = 2
    config = CheckpointConfig(num_to_keep=keep, checkpoint_score_attribute="val_top1", checkpoint_score_order="max")
    context = StorageContext(storage_path=str(tmp_path), experiment_dir_name="run")
    # epoch 0 (two mid-epoch checkpoints, end val 0.6), epoch 1 (end 0.4: worse), epoch 2 (three mid-epoch, then
    # the run is "killed" before its end)
    reports = [("mid", 2), ("mid", 4), ("end", 0.6), ("mid", 8), ("mid", 10), ("end", 0.4),
               ("mid", 14), ("mid", 16), ("mid", 18)]

    async def register_all() -> CheckpointManager:
        manager = CheckpointManager(config, context)
        for index, (kind, value) in enumerate(reports):
            name = f"checkpoint_{index:06d}"
            path = tmp_path / "run" / name
            path.mkdir(parents=True)
            (path / "train_state.pt").write_bytes(b"x")
            metrics = ({"val_top1": MID_EPOCH_SCORE, "mid_epoch": 1, "step": value} if kind == "mid"
                       else {"val_top1": value})
            manager.register_checkpoint(_TrainingReport(Checkpoint(str(path)), metrics, validation=False))
            on_disk = sorted(p.name for p in (tmp_path / "run").glob("checkpoint_*") if p.is_dir())
            assert name in on_disk, f"the newest checkpoint {name} was deleted"
            assert len(on_disk) <= keep + 1, on_disk
        await asyncio.sleep(0)  # let its notifications run
        return manager

    manager = asyncio.run(register_all())
    result = Result._from_checkpoint_manager(manager, context)
    best = result.get_best_checkpoint("val_top1", "max")
    assert best.path.endswith("checkpoint_000002")  # epoch 0's end: val 0.6
    on_disk = sorted(p.name for p in (tmp_path / "run").glob("checkpoint_*") if p.is_dir())
    # both end-of-epoch checkpoints outrank every mid-epoch one; the newest mid-epoch one stays for the restart
    assert on_disk == ["checkpoint_000002", "checkpoint_000005", "checkpoint_000008"]

    async def restart() -> CheckpointManager:  # what a restarted attempt (or a re-run of the command) resumes from
        return CheckpointManager(config, context)

    restarted = asyncio.run(restart())
    assert restarted.latest_checkpoint_result.checkpoint.path.endswith("checkpoint_000008")
    assert restarted.latest_checkpoint_result.metrics["step"] == 18
