"""Flow `evaluate-haltingvt`: evaluate a registered model version on a dataset split, publish the numbers."""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from hvt import storage
from hvt.config import ScalingSpec
from hvt.stages import EVAL_SPLIT, evaluate_registered
from hvt.train.ray_env import ensure_ray
from pipelines.credentials import apply_store_credentials
from pipelines.shard import _artifact_key


def _metrics_markdown(metrics: dict[str, Any], split: str) -> str:
    lines = [
        f"# {metrics['model']} {metrics['version']} on `{metrics['eval_set']}`",
        "",
        "| metric | value |",
        "|---|---|",
        f"| top-1 | {metrics[f'{split}_top1']:.4f} |",
        f"| top-5 | {metrics[f'{split}_top5']:.4f} |",
    ]
    for key in ("gflops_mean", "views", "gflops_per_view_mean", "gflops_per_video_mean", "gflops_p50", "gflops_p90",
                "gflops_p99", "clips", "clips_per_s", "eval_workers",
                "decode_failures"):
        if key in metrics:
            value = metrics[key]
            lines.append(f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |")
    return "\n".join(lines) + "\n"


@flow(name="evaluate-haltingvt", log_prints=True)
def evaluate_haltingvt(
    model: str,
    dataset_name: str,
    ref: str = "champion",
    store: str | None = None,
    dataset_version: str | None = None,
    split: str = EVAL_SPLIT,
    batch_size: int = 16,
    ray_address: str | None = None,
    credentials_block: str | None = None,
    scaling: ScalingSpec | None = None,
    views: Annotated[str | None, Field(pattern=r"^[1-9]\d*x[13]$")] = None,
) -> dict[str, Any]:
    """Evaluate registry version ``ref`` (vN, latest or an alias) of ``model``; sha256-verified before loading.

    ``store``: None = $HVT_STORE, else ./hvt-store. ``ray_address``: None = a local Ray. ``scaling``: None or
    one worker = evaluate in the flow's process; more workers = Ray Train workers on shares of the split.
    ``views``: test views per video as ``CLIPSxCROPS`` (e.g. ``4x3``), scores averaged over them; None = the
    version's data config.
    """
    logger = get_run_logger()
    apply_store_credentials(credentials_block)
    store = storage.resolve_store(store)
    ensure_ray(ray_address)
    metrics = evaluate_registered(
        store,
        model,
        ref,
        dataset_name=dataset_name,
        dataset_version=dataset_version,
        split=split,
        batch_size=batch_size,
        scaling=scaling,
        views=views,
    )
    create_markdown_artifact(
        key=f"evaluation-{_artifact_key(model)}",
        markdown=_metrics_markdown(metrics, split),
        description=f"{model} {metrics['version']} on {metrics['eval_set']}",
    )
    logger.info(
        "%s %s on %s: top-1 %.3f, top-5 %.3f",
        model, metrics["version"], metrics["eval_set"], metrics[f"{split}_top1"], metrics[f"{split}_top5"],
    )
    return metrics
