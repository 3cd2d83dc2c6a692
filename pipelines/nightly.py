"""The `nightly` decision: retrain only when the store holds a dataset version no registered model was trained on.

Promotion needs no rule here: ``register_run`` moves ``champion`` only when the new version passes
``config.promotion`` against it on one evaluation set (the champion re-scored on the new version's, see
``hvt.promotion``). When there is nothing new, the flow finishes cleanly and says why.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from hvt import registry
from hvt.config import TrainConfig
from hvt.ingest import latest_dataset_version


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str
    dataset_version: str | None


def retrain_decision(config: TrainConfig) -> RetrainDecision:
    """Retrain when the newest version of ``config.dataset_name`` has no registry version trained on it yet."""
    latest = latest_dataset_version(config.store, config.dataset_name)
    if latest is None:
        return RetrainDecision(
            False,
            f"no dataset {config.dataset_name!r} in {config.store} yet; run shard-dataset first",
            None,
        )
    model = config.resolved_registry_name()
    trained_on = [
        v for v in registry.list_versions(config.store, model)
        if v.lineage.get("dataset") == config.dataset_name and v.lineage.get("dataset_version") == latest.version
    ]
    if trained_on:
        newest = trained_on[-1]
        champion = registry.get_alias(config.store, model) or "none"
        return RetrainDecision(
            False,
            f"nothing new: no newer dataset: {config.dataset_name} {latest.version} (created {latest.created_at}) is the newest "
            f"and {model} {newest.version} was already trained on it (champion: {champion}); nothing to do",
            latest.version,
        )
    return RetrainDecision(
        True,
        f"{config.dataset_name} {latest.version} (created {latest.created_at}) has no {model} version yet; retraining",
        latest.version,
    )


@task(name="decide-retrain", cache_policy=NO_CACHE)
def decide_retrain(config: TrainConfig) -> RetrainDecision:
    decision = retrain_decision(config)
    get_run_logger().info("nightly: %s", decision.reason)
    return decision
