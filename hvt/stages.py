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

import numpy as np
import torch

import hvt
from hvt import registry
from hvt.config import ScalingSpec, TrainConfig
from hvt.data import DataConfig
from hvt.evaluation import plots
from hvt.evaluation.evaluate import halting_depths, read_clips
from hvt.evaluation.evaluator import select_device, with_views
from hvt.evaluation.report import render_report

# scoring moved to hvt.evaluation.runs (hvt.promotion scores champions with it); these names stay importable here
from hvt.evaluation.runs import eval_set_identity, run_evaluation
from hvt.evaluation.runs import evaluation_scaling as evaluation_scaling
from hvt.ingest.versions import DatasetRef, resolve_dataset
from hvt.integrity import SplitCheck, check_splits
from hvt.model import ModelConfig
from hvt.model.flops import GIGA, dense_config, model_macs
from hvt.model.zoo import model_from_state
from hvt.promotion import decide_for_metrics, evaluation_setting, score_state
from hvt.train.state import load_train_state
from hvt.train.trainer import TrainResult
from hvt.tune.tracking import record_evaluation

log = logging.getLogger(__name__)

EVAL_SPLIT = "val"


@dataclass(frozen=True)
class RegisteredModel:
    version: registry.RegistryVersion
    promoted: bool
    promotion_reason: str
    created: bool = True  # False: this run's checkpoint was already a version (a re-run of a finished run)
    decision: dict[str, Any] | None = None  # registry.ChampionDecision.as_record(): both figures, set, reason


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


def integrity_metrics(checks: dict[str, SplitCheck], train_metrics: dict[str, Any]) -> dict[str, Any]:
    """What the run left out or could not read: damaged shards skipped (by opt-in) and decode failures."""
    skipped = [f"{c.split}/{p}" for c in checks.values() for p in c.skipped]
    return {
        "skipped_shards": skipped,
        "skipped_samples": sum(c.skipped_samples for c in checks.values()),
        "train_decode_failures": int(train_metrics.get("train_decode_failures", 0) or 0),
    }


def evaluate_run(result: TrainResult, cfg: TrainConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate the run's best checkpoint on the val split (the shards that passed their check) of its dataset,
    or of the pinned ``cfg.eval_dataset``; return (metrics, checkpoint state)."""
    state = load_run_checkpoint(result)
    setting = evaluation_setting(result, cfg)
    raw = score_state(state, cfg.data, setting)
    check, dataset = setting.check, setting.dataset
    failures = int(raw.get("decode_failures", 0) or 0)
    metrics = {
        "val_top1": raw.get("top1", 0.0),
        "val_top5": raw.get("top5", 0.0),
        "num_classes": len(result.dataset.classes),
        "epoch": int(state["epoch"]),
        "eval_split": EVAL_SPLIT,
        "eval_set": setting.eval_set,
        "eval_dataset": dataset.name,
        "eval_dataset_version": dataset.version,
        "eval_views": setting.views,
        "eval_precision": setting.precision,
        "eval_manifest_sha256": raw.pop("eval_identity"),
        "dataset_manifest_sha256": result.dataset.manifest_sha256,
        **integrity_metrics(result.data_checks, result.metrics),
        **{k: v for k, v in raw.items() if k not in ("top1", "top5")},
    }
    if check is not None and dataset is not result.dataset:  # a pinned set: its shards left out count too
        metrics["skipped_shards"] += [f"{EVAL_SPLIT}/{p} ({dataset.name})" for p in check.skipped]
        metrics["skipped_samples"] += check.skipped_samples
    if metrics["eval_manifest_sha256"] != dataset.manifest_sha256:
        log.warning("evaluated %d of %s's clips (%d shards left out, %d decode failures): this evaluation set is "
                    "not comparable with a full one", int(raw.get("clips", 0)), metrics["eval_set"],
                    len(check.skipped) if check else 0, failures)
    return metrics, state


def _accuracy_points(store: str, metrics: dict[str, Any], label: str) -> list[plots.AccuracyPoint]:
    """Every registered version (of any model) evaluated on the same set as ``metrics``, plus the new one."""
    points = []
    for version in registry.list_versions(store):
        other = version.metrics
        same_set = other.get("eval_manifest_sha256") == metrics.get("eval_manifest_sha256") and other.get(
            "eval_split"
        ) == metrics.get("eval_split")
        if same_set and "gflops_mean" in other:
            points.append(
                plots.AccuracyPoint(f"{version.model} {version.version}", float(other["val_top1"]),
                                    float(other["gflops_mean"]))
            )
    points.append(plots.AccuracyPoint(label, float(metrics.get("val_top1", 0.0)),
                                      float(metrics.get("gflops_mean", 0.0)), highlight=True))
    return points


def evaluation_plots(
    store: str,
    model_name: str,
    state: dict[str, Any],
    metrics: dict[str, Any],
    dataset: DatasetRef,
    data_config: DataConfig,
    *,
    map_clips: int = 3,
) -> list[plots.Plot]:
    """The report's plots: tokens per block, halting-depth histogram, halting maps over ``map_clips`` val clips,
    and val top-1 vs GFLOPs of every version evaluated on the same set (this one highlighted)."""
    model_config = ModelConfig.from_dict(state["model_config"])
    out: list[plots.Plot] = []
    if metrics.get("tokens_per_layer"):
        out.append(
            plots.tokens_per_layer_plot(
                metrics["tokens_per_layer"],
                glimpser_depth=model_config.glimpser_depth,
                tokens_in=1 + model_config.num_frames * model_config.grid() ** 2,
            )
        )
    if metrics.get("halting_depth_histogram"):
        out.append(plots.halting_depth_plot(metrics["halting_depth_histogram"],
                                            glimpser_depth=model_config.glimpser_depth))
    clips = read_clips(dataset.path, metrics.get("eval_split", EVAL_SPLIT), data_config, map_clips)
    if clips:
        batch = np.stack([clip for _, _, clip in clips])  # [N, T, H, W, 3]
        depth, logits = halting_depths(model_from_state(state), batch)
        classes = dataset.classes
        out.append(
            plots.halting_maps_plot(
                [
                    plots.HaltingMapClip(
                        clip, depth[i].numpy(),
                        f"{key.rsplit('/', 1)[-1][:18]}\ntrue {classes[label]}\npred {classes[int(logits[i].argmax())]}",
                    )
                    for i, (key, label, clip) in enumerate(clips)
                ],
                depth=model_config.depth,
                glimpser_depth=model_config.glimpser_depth,
            )
        )
    else:
        log.warning("no decodable %s clips in %s: the report has no halting maps", EVAL_SPLIT, dataset.path)
    dense = model_macs(dense_config(model_config)) / GIGA
    bound = model_macs(model_config) / GIGA if model_config.glimpser_depth or model_config.halting else None
    out.append(
        plots.accuracy_vs_gflops_plot(
            _accuracy_points(store, metrics, f"{model_name} (this version)"),
            eval_set=str(metrics.get("eval_set", "")),
            dense_gflops=dense,
            no_halting_gflops=bound,
        )
    )
    return out


def version_of_run(store: str, model_name: str, run_name: str, epoch: int) -> registry.RegistryVersion | None:
    """The registered version holding checkpoint ``epoch`` of training run ``run_name``, if there is one."""
    for version in registry.list_versions(store, model_name):
        if version.lineage.get("run_name") == run_name and version.lineage.get("epoch") == epoch:
            return version
    return None


def register_run(
    result: TrainResult,
    cfg: TrainConfig,
    metrics: dict[str, Any],
    state: dict[str, Any],
    *,
    candidate: bool = True,
    lineage_extra: dict[str, Any] | None = None,
) -> RegisteredModel:
    """Store the evaluated model as a new registry version; move ``champion`` to it only if it passes
    ``cfg.promotion`` against the champion on this run's evaluation set (the champion re-scored there when it was
    scored elsewhere, see ``hvt.promotion``). The decision, with both figures, goes into the version's metrics
    (``promotion``) and report, and the log line.

    Re-running a finished run (same config and dataset version, so the same run name) resumes at its last epoch
    and evaluates the same checkpoint again: that checkpoint is already a version, which is returned as it is
    instead of registering a copy.

    ``candidate=False`` registers the version without putting it up for champion (a sweep registers every point
    of its Pareto front, and only the one its budget picks is a candidate); ``lineage_extra`` adds to the
    lineage (a sweep's name and trial).
    """
    model_name = cfg.resolved_registry_name()
    epoch = int(state["epoch"])
    existing = version_of_run(cfg.store, model_name, result.run_name, epoch)
    if existing is not None:
        reason = f"run {result.run_name} (epoch {epoch}) is already registered as {existing.version}: nothing new to register"
        log.info("%s %s: %s", model_name, existing.version, reason)
        record_evaluation(cfg.tracking, result.tracking_run_id, metrics, {}, version=existing,
                          champion=registry.get_alias(cfg.store, model_name) == existing.version)
        return RegisteredModel(existing, promoted=False, promotion_reason=reason, created=False)
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
        "epoch": epoch,
        "init_from": result.init_from,  # the registered weights a warm-started run began from, else None
        "config": cfg.model_dump(mode="json", exclude={"store"}),
        **(lineage_extra or {}),
    }
    eval_dataset = result.dataset
    if (metrics.get("eval_dataset"), metrics.get("eval_dataset_version")) not in (
            (None, None), (result.dataset.name, result.dataset.version)):
        eval_dataset = resolve_dataset(cfg.store, metrics["eval_dataset"], metrics["eval_dataset_version"])
    if candidate:
        decision = decide_for_metrics(cfg.store, model_name, metrics, lambda: evaluation_setting(result, cfg),
                                      cfg.promotion)
    else:
        decision = registry.ChampionDecision(
            promote=False, reason="registered as a point of the sweep's Pareto front; not its candidate for champion",
            challenger=registry.score_of(metrics, "new"), champion=None, policy=cfg.promotion)
    metrics = {**metrics, "promotion": decision.as_record()}
    figures = evaluation_plots(cfg.store, model_name, state, metrics, eval_dataset, cfg.data)
    report = render_report(
        title=f"{model_name}: evaluation on {metrics['eval_set']}",
        metrics=metrics,
        classes=classes,
        lineage=lineage,
        plots=[(figure.name, figure.title) for figure in figures],
    )
    shown = {  # the files a person reads; the tracking run gets them too
        "report.md": report.encode(),
        "config.json": (json.dumps(lineage["config"], indent=2, sort_keys=True) + "\n").encode(),
        **{figure.name: figure.png for figure in figures},
    }
    version = registry.register_version(
        cfg.store,
        model_name,
        files={"model.pt": buffer.getvalue(), **shown},
        metrics=metrics,
        lineage=lineage,
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    promoted, reason = decision.promote, decision.reason
    if promoted:
        try:
            registry.set_alias(cfg.store, model_name, version.version, reason=reason)
        except registry.RegistryError as err:  # the new version is registered; only moving the alias failed
            promoted, reason = False, f"registered but not promoted: {err}"
    if not decision.promote and reason.startswith("registered but not promoted"):
        log.warning("%s %s: %s", model_name, version.version, reason)
    log.info("register %s %s on %s: %s", model_name, version.version, metrics["eval_set"], reason)
    record_evaluation(cfg.tracking, result.tracking_run_id, metrics, shown, version=version, champion=promoted)
    return RegisteredModel(version, promoted, reason, decision=decision.as_record())



def evaluate_registered(
    store: str,
    model_name: str,
    ref: str,
    *,
    dataset_name: str,
    dataset_version: str | None = None,
    split: str = EVAL_SPLIT,
    batch_size: int = 16,
    ray_address: str | None = None,
    scaling: ScalingSpec | None = None,
    views: str | None = None,
    skip_bad_shards: bool = False,
) -> dict[str, Any]:
    """Evaluate a registry version (sha256-verified) on a dataset split; same metrics as after training, on
    ``scaling.num_workers`` Ray Train workers when given and more than one. ``views`` (``CLIPSxCROPS``, e.g.
    ``4x3``): the test views per video (default: the version's data config), scores averaged over them.

    The checkpoint is verified and the dataset resolved before Ray starts (``ray_address``: None = a local Ray,
    unless one is running in this process already), so a refused checkpoint costs no cluster."""
    from hvt.ingest.versions import resolve_dataset
    from hvt.train.ray_env import ensure_ray

    version = registry.get_version(store, model_name, ref)
    payload = registry.load_checkpoint(version)
    data_config = with_views(DataConfig.model_validate(payload["data_config"]), views)
    if scaling is not None and scaling.use_gpu and scaling.num_workers == 1:
        select_device(True)  # refuse --gpu where there is no GPU before anything starts
    dataset = resolve_dataset(store, dataset_name, dataset_version)
    if list(payload["classes"]) != dataset.classes:
        raise registry.RegistryError(
            f"{model_name} {version.version} was trained on classes that differ from {dataset_name} "
            f"{dataset.version}'s; evaluate it on a dataset with the same class list"
        )
    check = check_splits(dataset.path, [split], skip_bad=skip_bad_shards)[split]
    if not check.urls:
        raise registry.RegistryError(f"dataset {dataset_name} {dataset.version} has no readable {split!r} shards")
    ensure_ray(ray_address)
    raw = run_evaluation(payload, check.urls, split, data_config, num_classes=len(dataset.classes),
                         batch_size=batch_size, scaling=scaling)
    return {
        "model": model_name,
        "version": version.version,
        "eval_set": f"{dataset.name}/{dataset.version}/{split}",
        "eval_manifest_sha256": eval_set_identity(dataset.manifest_sha256, split, check,
                                                  int(raw.get("decode_failures", 0) or 0)),
        "skipped_shards": [f"{split}/{p}" for p in check.skipped],
        "skipped_samples": check.skipped_samples,
        f"{split}_top1": raw.get("top1", 0.0),
        f"{split}_top5": raw.get("top5", 0.0),
        **{k: v for k, v in raw.items() if k not in ("top1", "top5")},
    }
