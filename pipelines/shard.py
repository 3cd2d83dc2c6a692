"""Flow `shard-dataset`: annotations + raw videos -> a versioned WebDataset dataset in the store."""

from __future__ import annotations

import json
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from hvt.ingest import ShardConfig, shard_dataset


@task(name="write-shards", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def write_shards(config: ShardConfig) -> dict[str, Any]:
    """Plan, probe and write shards; a retry resumes (finished shards are skipped)."""
    result = shard_dataset(config)
    return {"version": result.version, "path": result.path, "counts": result.counts, "processed": result.processed,
            "reused": result.reused, "reused_quarantined": result.reused_quarantined,
            "reused_from": result.reused_from}


def _counts_markdown(name: str, summary: dict[str, Any]) -> str:
    counts = summary["counts"]
    lines = [
        f"# Dataset `{name}` version `{summary['version']}`",
        "",
        f"Path: `{summary['path']}`",
        "",
        "| input | sharded | quarantined |",
        "|---|---|---|",
        f"| {counts['input']} | {counts['sharded']} | {counts['quarantined']} |",
        "",
        f"Videos processed: {summary.get('processed', 0)}; reused from earlier versions "
        f"({', '.join(summary.get('reused_from', [])) or 'none'}): {summary.get('reused', 0)} samples, "
        f"{summary.get('reused_quarantined', 0)} quarantine verdicts.",
        "",
        "| quarantine reason | count |",
        "|---|---|",
    ]
    lines += [f"| {reason} | {n} |" for reason, n in sorted(counts.get("by_reason", {}).items())]
    return "\n".join(lines)


@flow(name="shard-dataset", log_prints=True)
def shard_dataset_flow(config: ShardConfig) -> dict[str, Any]:
    """Shard a video dataset; publishes the counts (by quarantine reason) as a Prefect artifact."""
    logger = get_run_logger()
    summary = write_shards(config)
    logger.info("dataset %s: %s", summary["path"], json.dumps(summary["counts"]))
    create_markdown_artifact(
        key=f"dataset-{_artifact_key(config.name)}",
        markdown=_counts_markdown(config.name, summary),
        description=f"sharding counts for {config.name}",
    )
    return summary


def _artifact_key(name: str) -> str:
    # artifact keys: lowercase letters, digits and dashes only
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "dataset"
