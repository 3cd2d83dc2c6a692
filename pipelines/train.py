"""Flow `train-haltingvt`, the main job: make sure shards exist -> train -> evaluate -> register."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from hvt import registry, storage
from hvt.config import TrainConfig
from hvt.ingest import ShardConfig, latest_dataset_version, make_synthetic_dataset, shard_dataset
from hvt.stages import evaluate_run, register_run
from hvt.train.trainer import TrainResult, run_training
from pipelines.params import SyntheticSource, VideoSource
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
            )
            logger.info("synthesized %d videos in %s", made.num_videos, made.root)
            shard_config = ShardConfig(
                annotations=made.annotations_csv, videos=made.videos_dir, store=store, name=config.dataset_name
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
) -> dict[str, Any]:
    """Shard if needed, train with Ray Train, evaluate on val, register; the report becomes a Prefect artifact."""
    logger = get_run_logger()
    config = config.model_copy(update={"store": storage.resolve_store(config.store)})
    dataset = ensure_dataset(config, synthetic, source)
    config = config.model_copy(update={"dataset_version": dataset["version"]})
    result = train(config)
    metrics, state = evaluate(result, config)
    registered = register(result, config, metrics, state)
    version = registered.version
    report = storage.read_text(storage.join(version.path, "report.md"))
    create_markdown_artifact(
        key=f"report-{_artifact_key(version.model)}",
        markdown=report,
        description=f"{version.model} {version.version} evaluation report",
    )
    summary = {
        "run": result.run_name,
        "dataset": {"name": config.dataset_name, **dataset},
        "metrics": metrics,
        "registry": {
            "model": version.model,
            "version": version.version,
            "path": version.path,
            "report": storage.join(version.path, "report.md"),
            "promoted": registered.promoted,
            "reason": registered.promotion_reason,
            "champion": registry.get_alias(config.store, version.model),
        },
    }
    logger.info(
        "%s %s: val top-1 %.3f (top-5 %.3f); %s",
        version.model,
        version.version,
        metrics["val_top1"],
        metrics["val_top5"],
        registered.promotion_reason,
    )
    return summary
