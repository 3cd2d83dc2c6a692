"""The training job as a Ray Jobs entrypoint: train -> evaluate -> register on the cluster, one JSON summary out.

    python -m hvt.train.job --config-json '<TrainConfig as JSON>' [--summary-url URL]
    python -m hvt.train.job --config-file /etc/hvt/train-config.json   # a path or store URL (KubeRay)

The `cluster` deployment of the `train-haltingvt` flow submits this with ``JobSubmissionClient``; it needs
only ``hvt`` (no Prefect on the cluster). The summary goes to stdout on a line starting with ``SUMMARY_PREFIX``
and, when ``--summary-url`` is given, to that store URL, where the submitting flow reads it back.
Credentials for an ``s3://`` store come from the cluster's own environment, never from the command line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from pydantic import ValidationError

from hvt import registry, storage
from hvt.config import TrainConfig
from hvt.errors import user_errors

log = logging.getLogger(__name__)

SUMMARY_PREFIX = "HVT_JOB_SUMMARY "


TRAIN_SUMMARY_KEYS = ("epoch", "train_loss", "train_clips", "train_decode_failures", "train_clips_per_s",
                      "train_data_wait_share")


def summarize(result: Any, cfg: TrainConfig, metrics: dict[str, Any], registered: Any) -> dict[str, Any]:
    """The run summary that both the local flow path and a cluster job return (plain JSON data)."""
    version = registered.version
    return {
        "run": result.run_name,
        "run_path": result.run_path,
        "dataset": {"name": result.dataset.name, "version": result.dataset.version},
        "metrics": metrics,
        # the last epoch's training figures (throughput is rank 0's, per worker)
        "train": {k: v for k, v in (result.metrics or {}).items() if k in TRAIN_SUMMARY_KEYS},
        "registry": {
            "model": version.model,
            "version": version.version,
            "path": version.path,
            "report": storage.join(version.path, "report.md"),
            "promoted": registered.promoted,
            "reason": registered.promotion_reason,
            "promotion": getattr(registered, "decision", None),  # both figures, the set, the policy
            "champion": registry.get_alias(cfg.store, version.model),
        },
    }


def train_evaluate_register(cfg: TrainConfig) -> dict[str, Any]:
    """The main job after sharding, in one process: train (or resume), evaluate on val, register."""
    from hvt.stages import evaluate_run, register_run
    from hvt.train.trainer import run_training

    result = run_training(cfg)
    metrics, state = evaluate_run(result, cfg)
    registered = register_run(result, cfg, metrics, state)
    return summarize(result, cfg, metrics, registered)


def _connect_to_cluster() -> None:
    """Inside a Ray job, join the cluster the job runs on (RAY_ADDRESS is set by the job supervisor)."""
    import ray

    if not ray.is_initialized():
        ray.init(log_to_driver=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config-json", help="the TrainConfig as JSON (model_dump output)")
    source.add_argument("--config-file", help="path or store URL of a TrainConfig JSON file")
    parser.add_argument("--summary-url", default=None, help="store URL to write the JSON summary to")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    text = args.config_json if args.config_json is not None else storage.read_text(args.config_file)
    try:
        cfg = TrainConfig.model_validate_json(text)
    except ValidationError as err:
        print(f"hvt.train.job: invalid training configuration:\n{err}", file=sys.stderr)
        return 2
    cfg = cfg.model_copy(update={"store": storage.resolve_store(cfg.store)})
    _connect_to_cluster()
    try:
        summary = train_evaluate_register(cfg)
    except user_errors() as err:  # the pre-flight, a missing dataset, a worker's data error: one line, exit 2
        print(f"hvt.train.job: {err}", file=sys.stderr, flush=True)
        return 2
    if args.summary_url:
        storage.write_json(args.summary_url, summary)
    print(SUMMARY_PREFIX + json.dumps(summary, sort_keys=True), flush=True)
    reg = summary["registry"]
    log.info("%s %s registered (%s)", reg["model"], reg["version"], reg["reason"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
