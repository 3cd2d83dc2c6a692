"""Wire model, data and config into a Ray Train ``TorchTrainer`` and run it.

The run is named deterministically from the config and the dataset version, and its storage lives in
``{store}/runs/<run>``: running the same config again resumes from the newest checkpoint instead of starting over.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow.fs
import ray.exceptions
import ray.train
from ray.train.torch import TorchTrainer

from hvt import storage
from hvt.config import TrainConfig
from hvt.data.placement import resolve_decode_resource
from hvt.ingest.versions import DatasetRef, resolve_dataset
from hvt.integrity import SplitCheck, check_splits
from hvt.maintenance.lease import run_lease
from hvt.train.loop import train_loop_per_worker
from hvt.train.ray_env import ensure_ray
from hvt.train.warm_start import init_lineage, resolve_init_from
from hvt.tune.tracking import resolve_tracking_uri

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
    init_from: dict[str, Any] | None = None  # the registered version a warm-started run began from (lineage)
    tracking_run_id: str | None = None  # the MLflow run of this training run (hvt.tune.tracking), when tracked


def _run_storage(store: str, folder: str = "runs") -> tuple[str, pyarrow.fs.FileSystem | None]:
    """Where Ray keeps ``{store}/<folder>`` (runs, or a sweep's Tune state) and the filesystem to reach it."""
    runs = storage.join(storage.resolve_store(store), folder)
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
    cfg: TrainConfig,
    dataset: DatasetRef,
    checks: dict[str, SplitCheck] | None = None,
    *,
    tracking_run_id: str | None = None,
    callbacks: list[Any] | None = None,
) -> tuple[TorchTrainer, str]:
    """A TorchTrainer for ``cfg`` on ``dataset`` (only the shards ``checks`` kept, when given); also returns the
    run name. ``tracking_run_id``: the MLflow run rank 0 logs each epoch to; ``callbacks``: Ray Train user
    callbacks (a sweep's trial passes its report to Ray Tune this way)."""
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
            # resolved here, on the driver, once: every rank builds its datasets with the same placement
            "decode_resource": resolve_decode_resource(cfg.scaling.decode_on),
            # where rank 0 logs each epoch (hvt.tune.tracking); not part of the config: it names no run
            "tracking": {"uri": resolve_tracking_uri(cfg.tracking), "run_id": tracking_run_id},
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.scaling.ray_num_workers,
            use_gpu=cfg.scaling.use_gpu,
            resources_per_worker=cfg.scaling.resources_per_worker(),
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
            # Ray Train itself retries nothing but preemptions: run_training decides, by the kind of failure,
            # whether another attempt can help (a lost node) or would fail the same way (a missing file)
            failure_config=ray.train.FailureConfig(max_failures=0),
            callbacks=list(callbacks or []),
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


def finished_run(cfg: TrainConfig, run_name: str) -> ray.train.Result | None:
    """The stored result of run ``run_name`` when it has already finished: its last report is the end of the
    config's last epoch (not a mid-epoch checkpoint). Re-running it would restore that checkpoint and train
    nothing, so ``run_training`` then starts no worker group. None when the run is new, unfinished or its
    folder cannot be read as a Ray Train run (``fit()`` then deals with it)."""
    if not run_has_checkpoint(cfg, cfg.dataset_version or ""):
        return None
    storage_path, storage_fs = _run_storage(cfg.store)
    try:
        result = ray.train.Result.from_path(f"{storage_path.rstrip('/')}/{run_name}", storage_filesystem=storage_fs)
    except Exception as err:  # noqa: BLE001 - any unreadable snapshot: let Ray Train's own restore report it
        log.debug("run %s: no readable result (%s); resuming it with Ray Train", run_name, err)
        return None
    last = result.metrics or {}
    if last.get("mid_epoch") or int(last.get("epoch", -1)) < cfg.optim.epochs - 1 or result.checkpoint is None:
        return None
    return result


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


def open_tracking_run(cfg: TrainConfig, run_name: str, dataset: DatasetRef) -> str | None:
    """The MLflow run of training run ``run_name`` (created with the whole config as params, or the one a
    previous attempt opened), or None when tracking is off or unreachable (``hvt.tune.tracking``)."""
    from hvt.tune.tracking import RUN_TAG, Tracker, flatten_params, run_tags

    tracker = Tracker(resolve_tracking_uri(cfg.tracking))
    if not tracker.enabled:
        return None
    run_id = tracker.open_run(
        cfg.tracking.experiment, RUN_TAG, run_name, run_name=run_name,
        tags=run_tags(run_name, dataset.name, dataset.version, cfg.model.name, cfg.tracking),
        params=flatten_params(cfg.model_dump(mode="json", exclude={"tracking"})),
    )
    # every run carries its config.json, also one that is never registered (a sweep trial off the front); a
    # registered version's upload of the same name replaces it (hvt.stages)
    config = json.dumps(cfg.model_dump(mode="json", exclude={"store"}), indent=2, sort_keys=True) + "\n"
    tracker.log_files(run_id, {"config.json": config.encode()})
    return run_id


def run_training(cfg: TrainConfig, callbacks: list[Any] | None = None) -> TrainResult:
    """Train (or resume) the run for ``cfg``; return the best checkpoint by val top-1 and the last metrics.
    ``callbacks``: Ray Train user callbacks added to the run (a sweep trial reports to Ray Tune with one).

    Before any worker trains, every node that will train or decode probes the store (``hvt.train.preflight``).
    Failures: a lost worker or node (or a store that failed transiently) resumes the run from its newest
    checkpoint, at most ``scaling.max_failures`` times; any other error (a missing file, a bad configuration, a
    damaged shard) fails once, with one line, since it would fail the same way again (``classify_failure``).
    """
    from hvt.train.preflight import run_preflight

    cfg = resolve_init_from(cfg)  # "MODEL@champion" -> "MODEL@vN": the run is named after the weights it starts from
    dataset = resolve_dataset(cfg.store, cfg.dataset_name, cfg.dataset_version)
    # pinned to the version it trains on, so "the newest" and that version named explicitly are one run, and
    # `hvt train --config configs/demo.json` names its run as `make demo` does (the flows pin it first)
    cfg = cfg.model_copy(update={"dataset_version": dataset.version})
    check_pretrained(cfg, dataset)
    checks = verify_dataset(cfg, dataset)
    ensure_ray(cfg.scaling.ray_address)  # the evaluation after training runs on it too
    tracking_run_id = open_tracking_run(cfg, cfg.resolved_run_name(dataset.version), dataset)
    # a sweep's trial too: it reports its evaluation to Ray Tune itself (hvt.tune.sweep.run_trial)
    finished = finished_run(cfg, cfg.resolved_run_name(dataset.version))
    if finished is not None:  # nothing left to train (a flow's retry, a re-run): no worker group is started
        run_name = cfg.resolved_run_name(dataset.version)
        log.info("training run %s already finished its %d epochs: using its checkpoints", run_name, cfg.optim.epochs)
        return _train_result(cfg, run_name, finished, dataset, checks, tracking_run_id)
    trainer, run_name = build_trainer(cfg, dataset, checks, tracking_run_id=tracking_run_id, callbacks=callbacks)
    run_preflight(cfg, dataset, trainer.train_loop_config["decode_resource"])
    log.info("training run %s on %s %s", run_name, dataset.name, dataset.version)
    # the lease tells `hvt store gc` that this run is alive even while an epoch writes nothing to its folder
    with run_lease(cfg.store, run_name, dataset=dataset.name, dataset_version=dataset.version):
        retries = 0
        while True:
            try:
                result = trainer.fit()
                break
            except ray.train.TrainingFailedError as err:
                kind = classify_failure(err)
                if kind != "fatal" and retries < cfg.scaling.max_failures:
                    retries += 1
                    log.warning("training run %s: %s (%s); resuming from its newest checkpoint, retry %d of %d",
                                run_name, "a worker or node was lost" if kind == "lost" else "the store failed",
                                _last_line(err), retries, cfg.scaling.max_failures)
                    # same run name: fit() resumes it
                    trainer, _ = build_trainer(cfg, dataset, checks, tracking_run_id=tracking_run_id,
                                               callbacks=callbacks)
                    continue
                _close_failed_tracking(cfg, tracking_run_id)
                if kind == "transient":  # the store went away under the workers: one line, the run resumes
                    raise storage.StoreUnavailableError(
                        f"training run {run_name} stopped: the store {storage.resolve_store(cfg.store)} became "
                        f"unavailable ({_last_line(err)}). Check that it is up and reachable, then re-run the "
                        "same command: it resumes from the last checkpoint"
                    ) from err
                if kind == "lost":
                    raise TrainingError(
                        f"training run {run_name} failed: workers were lost {retries + 1} times ({_last_line(err)}); "
                        "re-run the same command to resume from the last checkpoint"
                    ) from err
                raise TrainingError(
                    f"training run {run_name} failed (not retried: {_failure_text(err)}); fix the input or the "
                    "configuration and re-run: it resumes from the last checkpoint"
                ) from err
    return _train_result(cfg, run_name, result, dataset, checks, tracking_run_id)


def _train_result(cfg: TrainConfig, run_name: str, result: Any, dataset: DatasetRef,
                  checks: dict[str, SplitCheck], tracking_run_id: str | None) -> TrainResult:
    best = result.get_best_checkpoint("val_top1", "max") if hasattr(result, "get_best_checkpoint") else None
    checkpoint = best or result.checkpoint
    if checkpoint is None:
        raise TrainingError(f"training run {run_name} finished without a checkpoint")
    run_path = storage.join(storage.join(storage.resolve_store(cfg.store), "runs"), run_name)
    return TrainResult(run_name, run_path, checkpoint, dict(result.metrics or {}), dataset, checks,
                       init_lineage(cfg), tracking_run_id)


def _close_failed_tracking(cfg: TrainConfig, run_id: str | None) -> None:
    """Mark the MLflow run failed when training stops without another attempt (a re-run opens it again)."""
    if run_id is not None:
        from hvt.tune.tracking import Tracker

        Tracker(resolve_tracking_uri(cfg.tracking)).end_run(run_id, "FAILED")


FailureKind = Literal["lost", "transient", "fatal"]


def classify_failure(err: BaseException) -> FailureKind:
    """What a failed ``trainer.fit()`` means for a retry.

    ``lost``: a worker process or its node died or stopped answering its health checks (on any rank: when one
    rank dies, the others fail with collective errors of their own); resuming on a healthy worker group helps.
    ``transient``: the store failed in a way that may pass (``hvt.storage.is_transient``). ``fatal``: everything
    else, e.g. ``FileNotFoundError``, a bad configuration, a damaged shard, running out of memory: the next
    attempt would fail the same way. Ray Train wraps a worker's own exception (``UserExceptionWithTraceback``)
    and a dead worker (``WorkerHealthCheckFailedError``); both are looked through.
    """
    failures = list(getattr(err, "worker_failures", {}).values()) or [getattr(err, "controller_failure", err)]
    if isinstance(err, ray.train.PreemptionError):
        return "lost"
    chains = [_failure_chain(f) for f in failures]
    if any(_is_lost(e) for chain in chains for e in chain):
        return "lost"
    data_errors = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, KeyError, TypeError,
                   ValueError)
    if any(isinstance(e, data_errors) for chain in chains for e in chain):
        return "fatal"
    if any(storage.is_transient(e) for chain in chains for e in chain):
        return "transient"
    return "fatal"


_LOST_NAMES = {"WorkerHealthCheckFailedError", "WorkerHealthCheckTimeoutError"}  # Ray Train's own, internal types


def _is_lost(err: BaseException) -> bool:
    lost_types = (ray.exceptions.RayActorError, ray.exceptions.NodeDiedError, ray.exceptions.WorkerCrashedError,
                  ray.exceptions.LocalRayletDiedError, ray.exceptions.OwnerDiedError, ray.exceptions.ObjectLostError)
    return isinstance(err, lost_types) or type(err).__name__ in _LOST_NAMES


def _failure_chain(err: BaseException) -> list[BaseException]:
    """``err`` and what it wraps: Ray Train's wrappers (``_base_exc``, ``health_check_failure``), causes."""
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and len(chain) < 8 and all(current is not seen for seen in chain):
        chain.append(current)
        current = (getattr(current, "_base_exc", None) or getattr(current, "health_check_failure", None)
                   or current.__cause__)
    return chain


def _root(err: BaseException) -> BaseException:
    return _failure_chain(err)[-1]


def _last_line(err: BaseException) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1].strip()[:200] if lines else type(err).__name__


def _failure_text(err: BaseException) -> str:
    """The first worker's error as ``rank R: Type: message`` (one line)."""
    failures = getattr(err, "worker_failures", {}) or {}
    if not failures:
        return _last_line(err)
    rank = min(failures)
    cause = _root(failures[rank])
    return f"rank {rank}: {type(cause).__name__}: {_last_line(cause)}"
