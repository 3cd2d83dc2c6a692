"""`hvt sweep`: Ray Tune over a search space, each trial a full training run of the existing loop, ending with the
accuracy-compute Pareto front, its plot and report, the front registered and a budget's pick put up for champion.

How it runs (Ray Train V2 inside Ray Tune): each Tune trial is a function trainable that calls
``hvt.train.trainer.run_training`` (a ``TorchTrainer`` with the run's own deterministic name, checkpoints and
resume) with a Ray Train callback that passes every epoch's report to Tune, then evaluates the best checkpoint
on the sweep's evaluation set (``hvt.stages.evaluate_run``) and writes the result to
``{store}/sweeps/<sweep>/trials/<run>.json``. ASHA stops trials that are far behind at its rungs; at most
``max_concurrent`` trials train at once. Tune's own state lives in ``{store}/sweeps/<sweep>/``: running the same
sweep again restores it (finished trials are kept, unfinished ones start again and their training runs resume
from their checkpoints).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from hvt import storage
from hvt.config import TrainConfig
from hvt.tune.pareto import TrialPoint, front_plot, front_table, pareto_front, pick_under_budget, sweep_report
from hvt.tune.space import SweepConfig, trial_config
from hvt.tune.tracking import RUN_TAG, SWEEP_TAG, Tracker, flatten_params, resolve_tracking_uri

log = logging.getLogger(__name__)

TRIAL_CPUS = 0.01  # a trial's own actor only waits on its training run; its workers reserve their own CPUs
PLOT = "front.png"
REPORT = "report.md"
SUMMARY = "front.json"


@dataclass(frozen=True)
class SweepResult:
    name: str
    path: str
    points: list[TrialPoint]
    front: list[TrialPoint]
    picked: TrialPoint | None
    versions: dict[str, str]  # trial -> registry version of the front points
    promotion: str
    report: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "points": [p.as_dict() for p in self.points],
                "front": [p.trial for p in self.front], "picked": self.picked.trial if self.picked else None,
                "versions": self.versions, "promotion": self.promotion, "plot": storage.join(self.path, PLOT),
                "report": storage.join(self.path, REPORT)}


def sweep_path(store: str, name: str) -> str:
    return storage.join(storage.join(storage.resolve_store(store), "sweeps"), name)


def _epoch_report_callback() -> Any:
    """A Ray Train callback passing rank 0's end-of-epoch reports to Ray Tune with ``epochs_done`` (ASHA's
    clock); mid-epoch checkpoint reports carry no validation and are left out."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class EpochReport(TuneReportCallback):
        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            first = dict(metrics[0]) if metrics else {}
            if first.get("mid_epoch"):
                return
            first["epochs_done"] = int(first.get("epoch", 0)) + 1
            super().after_report(run_context, [first, *metrics[1:]], checkpoint)

    return EpochReport()


def run_trial(config: dict[str, Any]) -> None:
    """One Tune trial: train the point's config (or resume its run), evaluate it, record and report the result."""
    import ray.tune

    from hvt.stages import evaluate_run
    from hvt.train.trainer import run_training
    from hvt.tune.tracking import record_evaluation

    cfg = trial_config(TrainConfig.model_validate(config["train_config"]), config["point"])
    record_url = storage.join(config["trials_path"], f"{cfg.resolved_run_name(cfg.dataset_version or '')}.json")
    if storage.exists(record_url):  # finished before the sweep was stopped, even if Tune had not saved that yet
        done = storage.read_json(record_url)
        log.info("trial %s finished before: kept as it is", done["run_name"])
        # a sweep killed between the record and its tracking left the MLflow run open: finish it (once)
        record_evaluation(cfg.tracking, done.get("tracking_run_id"), done["metrics"], {})
        ray.tune.report({"evaluated": 1, "epochs_done": cfg.optim.epochs, "val_top1": done["metrics"]["val_top1"],
                         "eval_gflops": float(done["metrics"].get("gflops_mean", 0.0)), "run_name": done["run_name"]})
        return
    result = run_training(cfg, callbacks=[_epoch_report_callback()])
    metrics, _ = evaluate_run(result, cfg)
    record = {"run_name": result.run_name, "run_path": result.run_path, "checkpoint_path": result.checkpoint.path,
              "point": config["point"], "metrics": metrics, "train_metrics": result.metrics,
              "tracking_run_id": result.tracking_run_id}
    storage.write_json(storage.join(config["trials_path"], f"{result.run_name}.json"), record)  # written last
    record_evaluation(cfg.tracking, result.tracking_run_id, metrics, {})
    ray.tune.report({"evaluated": 1, "epochs_done": cfg.optim.epochs, "val_top1": metrics["val_top1"],
                     "eval_gflops": float(metrics.get("gflops_mean", 0.0)), "run_name": result.run_name})


def run_sweep(sweep: SweepConfig) -> SweepResult:
    """Run (or resume) ``sweep``; return its trials, the Pareto front, the budget's pick and the registered front."""
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler

    from hvt.ingest.versions import resolve_dataset
    from hvt.train.ray_env import ensure_ray
    from hvt.train.trainer import _run_storage

    base = sweep.base.model_copy(update={"store": storage.resolve_store(sweep.base.store)})
    dataset = resolve_dataset(base.store, base.dataset_name, base.dataset_version)
    base = base.model_copy(update={"dataset_version": dataset.version})
    name = sweep.resolved_name(dataset.version)
    path = sweep_path(base.store, name)
    tracker = Tracker(resolve_tracking_uri(base.tracking))
    parent = tracker.open_run(base.tracking.experiment, SWEEP_TAG, name, run_name=name,
                              tags={"hvt.dataset": dataset.name, "hvt.dataset_version": dataset.version},
                              params=flatten_params({"sweep": sweep.model_dump(mode="json", exclude={"base"}),
                                                     **base.model_dump(mode="json", exclude={"tracking"})}))
    if parent is not None:
        tracking = base.tracking.model_copy(update={"parent_run_id": parent,
                                                    "tags": {**base.tracking.tags, "hvt.sweep_trial_of": name}})
        base = base.model_copy(update={"tracking": tracking})
    ensure_ray(base.scaling.ray_address)
    points = sweep.points()
    space: dict[str, Any] = {"train_config": base.model_dump(mode="json"),
                             "trials_path": storage.join(path, "trials")}
    space["point"] = ray.tune.grid_search(points) if sweep.search == "grid" else ray.tune.choice(points)
    scheduler = None
    if sweep.early_stop and base.optim.epochs > sweep.grace_epochs:
        scheduler = ASHAScheduler(time_attr="epochs_done", metric="val_top1", mode="max",
                                  max_t=base.optim.epochs, grace_period=sweep.grace_epochs)
    sweeps_root, storage_fs = _run_storage(base.store, "sweeps")
    trainable = ray.tune.with_resources(run_trial, {"CPU": TRIAL_CPUS})
    experiment = f"{sweeps_root}/{name}"
    if ray.tune.Tuner.can_restore(experiment, storage_filesystem=storage_fs):
        log.info("sweep %s: resuming (finished trials are kept, unfinished ones resume their runs)", name)
        tuner = ray.tune.Tuner.restore(experiment, trainable, resume_unfinished=True, resume_errored=True,
                                       storage_filesystem=storage_fs)
    else:
        log.info("sweep %s: %d points, %s search, %d trials at a time", name, len(points), sweep.search,
                 sweep.max_concurrent)
        tuner = ray.tune.Tuner(
            trainable,
            param_space=space,
            tune_config=ray.tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=sweep.max_concurrent,
                                            num_samples=sweep.num_samples if sweep.search == "random" else 1),
            run_config=ray.tune.RunConfig(name=name, storage_path=sweeps_root, storage_filesystem=storage_fs,
                                          verbose=0),
        )
    grid = tuner.fit()
    trial_points = [_trial_point(base, dataset.version, item, path) for item in grid]
    for point in trial_points:  # trials ASHA stopped keep an open MLflow run: close it
        if point.status != "evaluated":
            run_id = tracker.find_run(base.tracking.experiment, RUN_TAG, point.run_name) if tracker.enabled else None
            tracker.end_run(run_id, "KILLED")
    result = finish_sweep(sweep, base, name, path, trial_points)
    tracker.log_files(parent, {PLOT: storage.read_bytes(storage.join(path, PLOT)), REPORT: result.report.encode()})
    best = result.picked
    tracker.set_tags(parent, {"hvt.front": ",".join(p.trial for p in result.front),
                              "hvt.pick": best.trial if best else "", "hvt.pick_version": result.versions.get(
                                  best.trial, "") if best else ""})
    tracker.end_run(parent)
    return result


def _trial_point(base: TrainConfig, dataset_version: str, item: Any, path: str) -> TrialPoint:
    """A Tune result as a ``TrialPoint``: evaluated from its record in the store, else its last epoch's
    figures (stopped early), or an error."""
    point = dict(item.config["point"])
    metrics = item.metrics or {}
    trial = str(metrics.get("trial_id") or item.path.rstrip("/").rsplit("/", 1)[-1])
    run_name = trial_config(base, point).resolved_run_name(dataset_version)
    record_url = storage.join(storage.join(path, "trials"), f"{run_name}.json")
    if storage.exists(record_url):
        record = storage.read_json(record_url)
        evaluated = record["metrics"]
        return TrialPoint(trial, point, float(evaluated["val_top1"]), float(evaluated.get("gflops_mean", 0.0)),
                          "evaluated", run_name, int(evaluated.get("epoch", 0)) + 1, {"record": record_url})
    status = "error" if item.error is not None else "stopped"
    top1, gflops = metrics.get("val_top1"), metrics.get("val_gflops")
    return TrialPoint(trial, point, float(top1) if top1 is not None else None,
                      float(gflops) if gflops is not None else None, status, run_name,
                      int(metrics.get("epochs_done", 0) or 0),
                      {"error": str(item.error).splitlines()[0][:300]} if item.error is not None else {})


def finish_sweep(sweep: SweepConfig, base: TrainConfig, name: str, path: str,
                 points: list[TrialPoint]) -> SweepResult:
    """The front, the pick under the budget, the registered front points (the pick last, as the candidate
    for champion through the promotion policy), the plot and the report, written beside the sweep's state."""
    front = pareto_front(points)
    picked = pick_under_budget(front, sweep.budget_gflops)
    versions: dict[str, str] = {}
    promotion = "not registered (register_front is off)"
    if sweep.register_front:
        ordered = [p for p in front if p is not picked] + ([picked] if picked is not None else [])
        for point in ordered:
            registered = register_front_point(base, name, point, candidate=point is picked)
            versions[point.trial] = registered.version.version
            if point is picked:
                promotion = registered.promotion_reason
    eval_sets = {storage.read_json(p.extra["record"])["metrics"].get("eval_set", "") for p in front}
    eval_set = ", ".join(sorted(eval_sets)) or "-"
    plot = front_plot(points, front, title=f"{name}\n{eval_set}", budget_gflops=sweep.budget_gflops,
                      picked=picked)
    report = sweep_report(name=name, eval_set=eval_set, points=points, front=front, picked=picked,
                          budget_gflops=sweep.budget_gflops, versions=versions, promotion=promotion, plot_name=PLOT)
    storage.write_bytes(storage.join(path, PLOT), plot)
    storage.write_text(storage.join(path, REPORT), report)
    result = SweepResult(name, path, points, front, picked, versions, promotion, report)
    storage.write_json(storage.join(path, SUMMARY), {
        **result.as_dict(), "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    log.info("sweep %s: Pareto front\n%s", name, front_table(front, picked, versions))
    return result


def register_front_point(base: TrainConfig, sweep_name: str, point: TrialPoint, *, candidate: bool) -> Any:
    """Register the trial's evaluated best checkpoint (``hvt.stages.register_run``) with the sweep and trial in
    its lineage; only a ``candidate`` is put up for champion."""
    import ray.train

    from hvt.ingest.versions import resolve_dataset
    from hvt.stages import load_run_checkpoint, register_run
    from hvt.train.trainer import TrainResult, _run_storage, verify_dataset
    from hvt.train.warm_start import init_lineage

    record = storage.read_json(point.extra["record"])
    cfg = trial_config(base, record["point"])
    dataset = resolve_dataset(cfg.store, cfg.dataset_name, cfg.dataset_version)
    _, filesystem = _run_storage(cfg.store)
    checkpoint = ray.train.Checkpoint(record["checkpoint_path"], filesystem=filesystem)
    result = TrainResult(record["run_name"], record["run_path"], checkpoint, record["train_metrics"], dataset,
                         verify_dataset(cfg, dataset), init_lineage(cfg), record.get("tracking_run_id"))
    state = load_run_checkpoint(result)
    lineage = {"sweep": {"name": sweep_name, "trial": point.trial, "point": record["point"]}}
    return register_run(result, cfg, record["metrics"], state, candidate=candidate, lineage_extra=lineage)
