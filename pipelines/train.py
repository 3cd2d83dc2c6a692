"""Flow `train-haltingvt`, the main job: make sure shards exist -> train -> evaluate -> register."""

from __future__ import annotations

import os
import tempfile
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from hvt import registry, storage
from hvt.config import TrainConfig
from hvt.ingest import ShardConfig, latest_dataset_version, make_synthetic_dataset, shard_dataset
from hvt.promotion import check_eval_dataset
from hvt.stages import evaluate_run, register_run
from hvt.train.job import summarize
from hvt.train.trainer import TrainResult, run_training
from pipelines.cluster import ClusterSpec, train_on_cluster
from pipelines.credentials import apply_store_credentials
from pipelines.nightly import decide_retrain
from pipelines.params import RetentionPolicy, SyntheticSource, VideoSource
from pipelines.shard import _artifact_key


@task(name="ensure-dataset", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def ensure_dataset(
    config: TrainConfig, synthetic: SyntheticSource | None, source: VideoSource | None
) -> dict[str, Any]:
    """Use the requested (or newest) dataset version; shard one from ``synthetic``/``source`` if none exists."""
    logger = get_run_logger()
    store = storage.resolve_store(config.store)
    existing = latest_dataset_version(store, config.dataset_name)
    if config.dataset_version or existing is not None:
        version = config.dataset_version or existing.version
        logger.info("using dataset %s version %s", config.dataset_name, version)
        return {"version": version, "created": False, "counts": None}
    if synthetic is None and source is None:
        raise ValueError(
            f"dataset {config.dataset_name!r} does not exist in {store} and no source was given: pass "
            "`synthetic` or `source` (annotations + videos), or run the shard-dataset flow first"
        )
    with tempfile.TemporaryDirectory(prefix="hvt-synth-") as scratch:
        if synthetic is not None:
            made = make_synthetic_dataset(
                os.path.join(scratch, "videos"),
                classes=synthetic.classes,
                per_class=synthetic.per_class,
                seed=synthetic.seed,
                frames=synthetic.frames,
                size=(synthetic.width, synthetic.height),
                workers=synthetic.workers,
            )
            logger.info("synthesized %d videos in %s", made.num_videos, made.root)
            shard_config = ShardConfig(
                annotations=made.annotations_csv, videos=made.videos_dir, store=store, name=config.dataset_name,
                shard_size=synthetic.shard_size, workers=synthetic.workers,
            )
        else:
            shard_config = ShardConfig(
                annotations=source.annotations,
                videos=source.videos,
                store=store,
                name=config.dataset_name,
                shard_size=source.shard_size,
                workers=source.workers,
            )
        result = shard_dataset(shard_config)
    logger.info("sharded %s: %s", result.path, result.counts)
    return {"version": result.version, "created": True, "counts": result.counts}


@task(name="train", cache_policy=NO_CACHE)
def train(config: TrainConfig) -> TrainResult:
    return run_training(config)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(result: TrainResult, config: TrainConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    return evaluate_run(result, config)


@task(name="register", cache_policy=NO_CACHE)
def register(result: TrainResult, config: TrainConfig, metrics: dict[str, Any], state: dict[str, Any]):
    return register_run(result, config, metrics, state)


@flow(name="train-haltingvt", log_prints=True)
def train_haltingvt(
    config: TrainConfig = TrainConfig(),
    synthetic: SyntheticSource | None = None,
    source: VideoSource | None = None,
    cluster: ClusterSpec | None = None,
    only_if_new_data: bool = False,
    warm_start: Literal["none", "champion"] = "none",
    retention: RetentionPolicy | None = None,
    credentials_block: str | None = None,
    eval_dataset: str | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Shard if needed, train with Ray Train, evaluate on val, register; the report (with the champion decision
    and both figures) becomes a Prefect artifact.

    ``cluster``: run train -> evaluate -> register as a Ray job on that cluster instead of a local Ray.
    ``only_if_new_data`` (the nightly deployment): ingest ``source`` first (a new dataset version only when the
    annotations or videos changed, reusing every unchanged sample), then skip, and say why, unless the newest
    dataset version has no registered model yet. ``warm_start="champion"``: fine-tune the current champion (when
    there is one) instead of training from scratch. ``retention``: `hvt store gc` after the run.
    ``credentials_block``: a Prefect Secret block with the store's S3 credentials.
    ``eval_dataset``: a pinned evaluation set, ``NAME[@VERSION]`` (overrides ``config.eval_dataset``): the run
    and the champion are both scored on its val split. The promotion policy is ``config.promotion``.
    ``tracking_uri``: an MLflow tracking server (overrides ``config.tracking.tracking_uri``; default the
    worker's ``$MLFLOW_TRACKING_URI``, none: no tracking): the run, its epochs, report and registry version.
    """
    logger = get_run_logger()
    apply_store_credentials(credentials_block)
    update: dict[str, Any] = {"store": storage.resolve_store(config.store)}
    if eval_dataset is not None:
        update["eval_dataset"] = eval_dataset
    if tracking_uri is not None:
        update["tracking"] = {**config.tracking.model_dump(), "tracking_uri": tracking_uri}
    config = TrainConfig.model_validate({**config.model_dump(), **update})  # checks eval_dataset's form
    if only_if_new_data:
        if source is not None and not config.dataset_version:
            ingest(config, source)
        decision = decide_retrain(config)
        if not decision.retrain:
            create_markdown_artifact(
                key=f"nightly-{_artifact_key(config.resolved_registry_name())}",
                markdown=f"# Nightly retraining skipped\n\n{decision.reason}\n",
                description="why the nightly run did not retrain",
            )
            if retention is not None:
                collect(config, retention)
            return {"skipped": True, "reason": decision.reason, "dataset_version": decision.dataset_version}
    if warm_start == "champion":
        config = warm_start_from_champion(config)
    dataset = ensure_dataset(config, synthetic, source)
    config = config.model_copy(update={"dataset_version": dataset["version"]})
    check_eval_dataset(config)  # a missing or mismatched pinned set fails before anything trains
    if cluster is not None:
        summary = train_on_cluster(config, cluster)
    else:
        result = train(config)
        metrics, state = evaluate(result, config)
        summary = summarize(result, config, metrics, register(result, config, metrics, state))
    summary["dataset"] = {"name": config.dataset_name, **dataset}
    reg, metrics = summary["registry"], summary["metrics"]
    create_markdown_artifact(
        key=f"report-{_artifact_key(reg['model'])}",
        markdown=storage.read_text(reg["report"]),
        description=f"{reg['model']} {reg['version']} evaluation report",
    )
    logger.info(
        "register %s %s: val top-1 %.3f (top-5 %.3f) on %s; %s",
        reg["model"],
        reg["version"],
        metrics["val_top1"],
        metrics["val_top5"],
        metrics.get("eval_set", "?"),
        reg["reason"],
    )
    if retention is not None:
        summary["retention"] = collect(config, retention)
    return summary


@task(name="ingest", cache_policy=NO_CACHE)
def ingest(config: TrainConfig, source: VideoSource) -> dict[str, Any]:
    """Shard ``source`` into ``config.dataset_name``: the same version when nothing changed (finished shards are
    kept), else a new one that reuses every unchanged sample's stored bytes (``hvt.ingest``)."""
    logger = get_run_logger()
    result = shard_dataset(ShardConfig(annotations=source.annotations, videos=source.videos, store=config.store,
                                       name=config.dataset_name, shard_size=source.shard_size,
                                       workers=source.workers))
    logger.info("ingest: %s %s: %d videos processed, %d reused (%s)", config.dataset_name, result.version,
                result.processed, result.reused + result.reused_quarantined, result.counts)
    return {"version": result.version, "counts": result.counts, "processed": result.processed,
            "reused": result.reused + result.reused_quarantined}


@task(name="warm-start", cache_policy=NO_CACHE)
def warm_start_from_champion(config: TrainConfig) -> TrainConfig:
    """``config`` starting from the champion's weights, or unchanged (from scratch) when there is none yet."""
    logger = get_run_logger()
    model = config.resolved_registry_name()
    if registry.get_alias(config.store, model) is None:
        logger.info("warm start: %s has no champion yet; training from scratch", model)
        return config
    return config.model_copy(update={"model": config.model.model_copy(update={"init_from": f"{model}@champion"})})


@task(name="retention", cache_policy=NO_CACHE)
def collect(config: TrainConfig, policy: RetentionPolicy) -> dict[str, Any]:
    """`hvt store gc` with the flow's policy; logs what went and the bytes freed."""
    from hvt.maintenance.gc import collect_garbage

    report = collect_garbage(config.store, keep_runs=policy.keep_runs,
                             keep_dataset_versions=policy.keep_dataset_versions, dry_run=policy.dry_run)
    get_run_logger().info("retention: %s %d folder(s), %d bytes", "would remove" if policy.dry_run else "removed",
                          len(report.removed), report.bytes_freed)
    return {"removed": [item.path for item in report.removed], "bytes_freed": report.bytes_freed,
            "dry_run": policy.dry_run}
