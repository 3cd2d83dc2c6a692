"""Flow `sweep-haltingvt`: Ray Tune over keep rate / halting centre / ponder weight / lr on the user's own data;
the accuracy-GFLOPs Pareto front as a report artifact, its points registered, a budget's pick put up for champion."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from hvt import storage
from hvt.tune.pareto import front_table
from hvt.tune.space import SweepConfig
from hvt.tune.sweep import SweepResult, run_sweep
from pipelines.credentials import apply_store_credentials
from pipelines.params import SyntheticSource, VideoSource
from pipelines.shard import _artifact_key
from pipelines.train import ensure_dataset


@task(name="sweep", cache_policy=NO_CACHE)
def sweep(config: SweepConfig) -> SweepResult:
    return run_sweep(config)


@flow(name="sweep-haltingvt", log_prints=True)
def sweep_haltingvt(
    config: SweepConfig = SweepConfig(),
    synthetic: SyntheticSource | None = None,
    source: VideoSource | None = None,
    budget_gflops: float | None = None,
    tracking_uri: str | None = None,
    credentials_block: str | None = None,
) -> dict[str, Any]:
    """Shard if needed, then sweep: every trial a full training run (Ray Train inside Ray Tune, ASHA stopping
    hopeless trials), the Pareto front of val top-1 vs GFLOPs per clip as a plot and a markdown report artifact
    (`sweep-<model>`), every front point registered and the most accurate one within ``budget_gflops``
    (overrides ``config.budget_gflops``) put up for champion through the promotion policy. A re-run of the same
    sweep resumes it. ``tracking_uri`` (overrides ``config.base.tracking.tracking_uri``): MLflow, the sweep as a
    parent run with its trials nested.
    """
    logger = get_run_logger()
    apply_store_credentials(credentials_block)
    base = config.base.model_copy(update={"store": storage.resolve_store(config.base.store)})
    if tracking_uri is not None:
        base = base.model_copy(update={"tracking": base.tracking.model_copy(update={"tracking_uri": tracking_uri})})
    dataset = ensure_dataset(base, synthetic, source)
    base = base.model_copy(update={"dataset_version": dataset["version"]})
    update: dict[str, Any] = {"base": base.model_dump()}
    if budget_gflops is not None:
        update["budget_gflops"] = budget_gflops
    config = SweepConfig.model_validate({**config.model_dump(), **update})
    result = sweep(config)
    create_markdown_artifact(
        key=f"sweep-{_artifact_key(base.resolved_registry_name())}",
        markdown=result.report,
        description=f"sweep {result.name}: Pareto front of val top-1 vs GFLOPs per clip",
    )
    logger.info("sweep %s: front\n%s", result.name, front_table(result.front, result.picked, result.versions))
    return result.as_dict()
