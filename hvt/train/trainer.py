"""Wire model, data and config into a Ray Train ``TorchTrainer`` and run it.

The run is named deterministically from the config and the dataset version, and its storage lives in
``{store}/runs/<run>``: running the same config again resumes from the newest checkpoint instead of starting over.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs
import ray.train
from ray.train.torch import TorchTrainer

from hvt import storage
from hvt.config import TrainConfig
from hvt.ingest.versions import DatasetRef, resolve_dataset
from hvt.integrity import SplitCheck, check_splits
from hvt.train.loop import train_loop_per_worker
from hvt.train.ray_env import ensure_ray

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot start or did not finish; the message says why and what to do."""


@dataclass(frozen=True)
class TrainResult:
    run_name: str
    run_path: str
    checkpoint: ray.train.Checkpoint
    metrics: dict[str, Any]
    dataset: DatasetRef
    data_checks: dict[str, SplitCheck] = field(default_factory=dict)  # per split: shards read, shards left out


def _run_storage(store: str) -> tuple[str, pyarrow.fs.FileSystem | None]:
    runs = storage.join(storage.resolve_store(store), "runs")
    if storage.is_local(runs):
        storage.makedirs(runs)
        return runs, None
    fs, path = storage.get_fs(runs)
    return path, pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))


def verify_dataset(cfg: TrainConfig, dataset: DatasetRef) -> dict[str, SplitCheck]:
    """Check the train and val shards against the manifest before any worker starts (see hvt.integrity)."""
    checks = check_splits(dataset.path, ["train", "val"], skip_bad=cfg.skip_bad_shards)
    for check in checks.values():
        for problem in check.skipped:
            log.warning("leaving out damaged %s shard %s", check.split, problem)
    return checks


def build_trainer(
    cfg: TrainConfig, dataset: DatasetRef, checks: dict[str, SplitCheck] | None = None
) -> tuple[TorchTrainer, str]:
    """A TorchTrainer for ``cfg`` on ``dataset`` (only the shards ``checks`` kept, when given); also returns the
    run name."""
    train_source = checks["train"].urls if checks else dataset.path
    val_source = checks["val"].urls if checks else dataset.path
    for split, source in (("train", train_source), ("val", val_source)):
        if not source:
            raise TrainingError(f"dataset {dataset.name} {dataset.version} has no readable {split!r} shards left")
    # both splits are built inside the loop, once per attempt (hvt.train.worker_data: TrainSplits, val_iterator)
    n_train = checks["train"].samples if checks else dataset.split_samples("train")
    if n_train == 0:
        raise TrainingError(f"dataset {dataset.name} {dataset.version} has no 'train' samples")
    per_step = cfg.optim.batch_size * cfg.scaling.num_workers
    run_name = cfg.resolved_run_name(dataset.version)
    storage_path, storage_fs = _run_storage(cfg.store)
    resources = {"CPU": cfg.scaling.cpus_per_worker}
    if cfg.scaling.use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "train_config": cfg.model_dump(mode="json"),
            "num_classes": len(dataset.classes),
            "manifest_sha256": dataset.manifest_sha256,
            "dataset_path": train_source,  # a version folder, or the list of its train shards that verified
            "val_path": val_source,
            "steps_per_epoch": math.ceil(n_train / per_step),
            "train_samples": n_train,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.scaling.ray_num_workers,
            use_gpu=cfg.scaling.use_gpu,
            resources_per_worker=resources,
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=cfg.scaling.keep_checkpoints,
                checkpoint_score_attribute="val_top1",
                checkpoint_score_order="max",
            ),
            failure_config=ray.train.FailureConfig(max_failures=cfg.scaling.max_failures),
        ),
    )
    return trainer, run_name


def run_has_checkpoint(cfg: TrainConfig, dataset_version: str) -> bool:
    """Whether the run for ``cfg`` already reported a checkpoint (so starting it again resumes it)."""
    run_path = storage.join(storage.resolve_store(cfg.store), "runs", cfg.resolved_run_name(dataset_version))
    try:
        return any(name.startswith("checkpoint_") for name in storage.listdir(run_path))
    except (FileNotFoundError, OSError):
        return False


def check_pretrained(cfg: TrainConfig, dataset: DatasetRef) -> None:
    """Before any worker starts: ``cfg.model.pretrained`` must load into the model this run trains (only the
    head may differ; see ``hvt.model.load_pretrained``). Skipped for a run that resumes from its checkpoint,
    which never reloads the pretrained weights. Raises ``TrainingError`` naming the file and the keys at fault."""
    if not cfg.model.pretrained:
        return
    if run_has_checkpoint(cfg, dataset.version):
        log.info("run resumes from its checkpoint: pretrained weights %s are not loaded again", cfg.model.pretrained)
        return
    from hvt.model import WeightsError, create_model, load_pretrained

    model = create_model(cfg.model.name, num_classes=len(dataset.classes), **cfg.model_overrides())
    try:
        load_pretrained(model, cfg.model.pretrained)
    except WeightsError as err:
        raise TrainingError(f"--pretrained {cfg.model.pretrained}: {err}") from err


def run_training(cfg: TrainConfig) -> TrainResult:
    """Train (or resume) the run for ``cfg``; return the best checkpoint by val top-1 and the last metrics."""
    dataset = resolve_dataset(cfg.store, cfg.dataset_name, cfg.dataset_version)
    check_pretrained(cfg, dataset)
    checks = verify_dataset(cfg, dataset)
    ensure_ray(cfg.scaling.ray_address)
    trainer, run_name = build_trainer(cfg, dataset, checks)
    log.info("training run %s on %s %s", run_name, dataset.name, dataset.version)
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as err:
        if storage.is_transient(err):  # the store went away under the workers: one line, the run resumes
            raise storage.StoreUnavailableError(
                f"training run {run_name} stopped: the store {storage.resolve_store(cfg.store)} became unavailable "
                f"({str(err).strip().splitlines()[-1][:160]}). Check that it is up and reachable, then re-run the "
                "same command: it resumes from the last checkpoint"
            ) from err
        raise TrainingError(f"training run {run_name} failed: {err}") from err
    best = result.get_best_checkpoint("val_top1", "max") if hasattr(result, "get_best_checkpoint") else None
    checkpoint = best or result.checkpoint
    if checkpoint is None:
        raise TrainingError(f"training run {run_name} finished without a checkpoint")
    run_path = storage.join(storage.join(storage.resolve_store(cfg.store), "runs"), run_name)
    return TrainResult(run_name, run_path, checkpoint, dict(result.metrics or {}), dataset, checks)
