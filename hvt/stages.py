"""The stages of the main job after training, as plain functions: evaluate a run, register it, promote it.

The CLI (`hvt train`, `hvt evaluate`) and the Prefect flows call exactly these, so there is one code path per job.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import hvt
from hvt import registry
from hvt.config import TrainConfig
from hvt.evaluation.evaluate import evaluate_model, model_from_state
from hvt.evaluation.report import render_report
from hvt.train.state import load_train_state
from hvt.train.trainer import TrainResult

log = logging.getLogger(__name__)

EVAL_SPLIT = "val"


@dataclass(frozen=True)
class RegisteredModel:
    version: registry.RegistryVersion
    promoted: bool
    promotion_reason: str


def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{hvt.__version__}+{sha}" if sha else hvt.__version__


def load_run_checkpoint(result: TrainResult) -> dict[str, Any]:
    with result.checkpoint.as_directory() as directory:
        return load_train_state(directory)


def evaluate_run(result: TrainResult, cfg: TrainConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate the run's best checkpoint on the val split; return (metrics, checkpoint state)."""
    state = load_run_checkpoint(result)
    model = model_from_state(state)
    raw = evaluate_model(
        model,
        result.dataset.path,
        EVAL_SPLIT,
        cfg.data,
        num_classes=len(result.dataset.classes),
        batch_size=cfg.optim.batch_size,
    )
    metrics = {
        "val_top1": raw.get("top1", 0.0),
        "val_top5": raw.get("top5", 0.0),
        "num_classes": len(result.dataset.classes),
        "epoch": int(state["epoch"]),
        "eval_split": EVAL_SPLIT,
        "eval_set": f"{result.dataset.name}/{result.dataset.version}/{EVAL_SPLIT}",
        "eval_manifest_sha256": result.dataset.manifest_sha256,
        **{k: v for k, v in raw.items() if k not in ("top1", "top5")},
    }
    return metrics, state


def _beats(candidate: dict[str, Any], champion: dict[str, Any]) -> tuple[bool, str]:
    if candidate.get("eval_manifest_sha256") != champion.get("eval_manifest_sha256") or candidate.get(
        "eval_split"
    ) != champion.get("eval_split"):
        return False, "champion was evaluated on a different evaluation set; not comparable, not promoted"
    new, old = float(candidate.get("val_top1", 0.0)), float(champion.get("val_top1", 0.0))
    if new > old:
        return True, f"val_top1 {new:.4f} > champion's {old:.4f}"
    return False, f"val_top1 {new:.4f} does not beat champion's {old:.4f}"


def register_run(
    result: TrainResult, cfg: TrainConfig, metrics: dict[str, Any], state: dict[str, Any]
) -> RegisteredModel:
    """Store the evaluated model as a new registry version; move ``champion`` to it only if it is better."""
    model_name = cfg.resolved_registry_name()
    classes = result.dataset.classes
    payload = {
        "model": state["model"],
        "model_config": state["model_config"],
        "classes": classes,
        "data_config": cfg.data.model_dump(mode="json"),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    lineage = {
        "dataset": result.dataset.name,
        "dataset_version": result.dataset.version,
        "dataset_manifest_sha256": result.dataset.manifest_sha256,
        "run_name": result.run_name,
        "run_path": result.run_path,
        "code_version": code_version(),
        "model_variant": cfg.model.name,
        "epoch": int(state["epoch"]),
        "config": cfg.model_dump(mode="json", exclude={"store"}),
    }
    report = render_report(
        title=f"{model_name}: evaluation on {metrics['eval_set']}",
        metrics=metrics,
        classes=classes,
        lineage=lineage,
    )
    version = registry.register_version(
        cfg.store,
        model_name,
        files={
            "model.pt": buffer.getvalue(),
            "report.md": report.encode(),
            "config.json": (json.dumps(lineage["config"], indent=2, sort_keys=True) + "\n").encode(),
        },
        metrics=metrics,
        lineage=lineage,
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    champion_ref = registry.get_alias(cfg.store, model_name)
    if champion_ref is None:
        promoted, reason = True, "first version: no champion yet"
    else:
        champion = registry.get_version(cfg.store, model_name, champion_ref)
        promoted, reason = _beats(metrics, champion.metrics)
    if promoted:
        registry.set_alias(cfg.store, model_name, version.version, reason=reason)
    log.info("%s %s: %s", model_name, version.version, reason)
    return RegisteredModel(version, promoted, reason)


def evaluate_registered(
    store: str,
    model_name: str,
    ref: str,
    *,
    dataset_name: str,
    dataset_version: str | None = None,
    split: str = EVAL_SPLIT,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Evaluate a registry version (sha256-verified) on a dataset split; same metrics as after training."""
    from hvt.data import DataConfig
    from hvt.train.trainer import resolve_dataset

    version = registry.get_version(store, model_name, ref)
    payload = registry.load_checkpoint(version)
    dataset = resolve_dataset(store, dataset_name, dataset_version)
    if list(payload["classes"]) != dataset.classes:
        raise registry.RegistryError(
            f"{model_name} {version.version} was trained on classes that differ from {dataset_name} "
            f"{dataset.version}'s; evaluate it on a dataset with the same class list"
        )
    model = model_from_state(payload)
    raw = evaluate_model(
        model,
        dataset.path,
        split,
        DataConfig.model_validate(payload["data_config"]),
        num_classes=len(dataset.classes),
        batch_size=batch_size,
    )
    return {
        "model": model_name,
        "version": version.version,
        "eval_set": f"{dataset.name}/{dataset.version}/{split}",
        f"{split}_top1": raw.get("top1", 0.0),
        f"{split}_top5": raw.get("top5", 0.0),
        **{k: v for k, v in raw.items() if k not in ("top1", "top5")},
    }
