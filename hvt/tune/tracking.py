"""Experiment tracking with MLflow: one MLflow run per training run, sweeps as parent runs, registry versions
mirrored as MLflow model versions.

Tracking is on when a tracking URI is set (``TrainConfig.tracking.tracking_uri``, else ``$MLFLOW_TRACKING_URI``)
and off otherwise. It only records: our registry stays the source of truth, and a tracking server that cannot be
reached (or fails midway) costs one warning per process, never a training run. After the first failure every
further call to that server is skipped in this process, so a dead server does not add a timeout per epoch.

Who writes what:

- the driver (``hvt.train.trainer.run_training``) opens the run (or finds the one a resumed run opened before:
  tag ``hvt.run_name``) and logs the whole config as params once, when the run is created;
- rank 0 of the training loop logs each epoch's train / val figures with ``step = epoch``;
- the stages after training log the evaluation (GFLOPs per clip, tokens kept per layer and the halting-depth
  histogram with the layer / depth as the step), the report, plots and ``config.json`` as artifacts, the
  registry version as a tag, mirror the version as an MLflow model version (alias ``champion`` moved when ours
  moves) and close the run.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from hvt.config import TrackingSpec
    from hvt.registry import RegistryVersion

log = logging.getLogger(__name__)

TRACKING_ENV = "MLFLOW_TRACKING_URI"
RUN_TAG = "hvt.run_name"
SWEEP_TAG = "hvt.sweep"
VERSION_TAG = "hvt.registry_version"
PARENT_TAG = "mlflow.parentRunId"
# MLflow's HTTP client retries with back-off for minutes by default; a tracking hiccup must not stall training
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                  "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
_PARAM_VALUE_LIMIT = 6000
_BATCH = 100  # MLflow takes at most 100 params per log_batch call

T = TypeVar("T")

# tracking URIs that failed in this process -> what failed first (one warning each, then tracking is off)
_failed: dict[str, str] = {}


def resolve_tracking_uri(spec: TrackingSpec | None = None) -> str | None:
    """The tracking URI to use: the config's, else ``$MLFLOW_TRACKING_URI``; None (tracking off) when neither."""
    uri = (spec.tracking_uri if spec is not None else None) or os.environ.get(TRACKING_ENV) or None
    return uri.strip() if uri and uri.strip() else None


def tracking_failed(uri: str | None) -> str | None:
    """Why tracking to ``uri`` was turned off in this process (the first failure), or None."""
    return _failed.get(uri or "")


def flatten_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: ``{"optim": {"lr": 0.001}}`` -> ``{"optim.lr": "0.001"}``."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, name + "."))
        else:
            out[name] = str(value)[:_PARAM_VALUE_LIMIT]
    return out


def numeric_metrics(metrics: Mapping[str, Any], skip: Iterable[str] = ()) -> dict[str, float]:
    """The finite numbers of ``metrics`` (booleans and lists left out), as floats."""
    skipped = set(skip)
    return {key: float(value) for key, value in metrics.items()
            if key not in skipped and isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(float(value))}


class Tracker:
    """MLflow calls against one tracking server that never raise: the first failure logs one warning and turns
    tracking to that server off for the rest of this process. ``Tracker(None)`` does nothing."""

    def __init__(self, uri: str | None) -> None:
        self.uri = uri
        self._client: Any = None

    @property
    def enabled(self) -> bool:
        return self.uri is not None and self.uri not in _failed

    def call(self, what: str, action: Callable[[Any], T]) -> T | None:
        """``action(client)``, or None when tracking is off or the call fails (then warned about once)."""
        if not self.enabled:
            return None
        try:
            return action(self.client())
        except Exception as err:  # noqa: BLE001 - any tracking failure is recorded and never fails training
            self._turn_off(what, err)
            return None

    def client(self) -> Any:
        if self._client is None:
            for key, value in _HTTP_DEFAULTS.items():
                os.environ.setdefault(key, value)
            try:
                from mlflow.tracking import MlflowClient
            except ImportError as err:
                raise RuntimeError("mlflow is not installed: pip install 'haltingvt[tracking]'") from err
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def _turn_off(self, what: str, err: BaseException) -> None:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        _failed[self.uri or ""] = f"{what}: {type(err).__name__}: {first_line}"
        log.warning("MLflow tracking at %s failed while %s (%s: %s); tracking is off for the rest of this process "
                    "and training goes on (our registry and store are unaffected)", self.uri, what,
                    type(err).__name__, first_line)

    # ------------------------------------------------------------------ runs

    def experiment_id(self, client: Any, name: str) -> str:
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        try:
            return client.create_experiment(name)
        except Exception:  # created meanwhile by another process (a concurrent trial)
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def open_run(self, experiment: str, key_tag: str, key: str, *, run_name: str, tags: Mapping[str, str],
                 params: Mapping[str, str] | None = None) -> str | None:
        """The id of the run of ``experiment`` tagged ``key_tag=key``, created (with ``tags`` and ``params``) when
        there is none; a found run is marked running again (a resumed training run or sweep continues its run)."""

        def action(client: Any) -> str:
            experiment_id = self.experiment_id(client, experiment)
            found = client.search_runs([experiment_id], filter_string=f"tags.`{key_tag}` = '{_quote(key)}'",
                                       max_results=1)
            if found:
                run_id = found[0].info.run_id
                client.update_run(run_id, status="RUNNING")
                return run_id
            run = client.create_run(experiment_id, run_name=run_name, tags={key_tag: key, **tags})
            run_id = run.info.run_id
            items = sorted((params or {}).items())
            if items:
                from mlflow.entities import Param

                for start in range(0, len(items), _BATCH):
                    client.log_batch(run_id, params=[Param(k, v) for k, v in items[start:start + _BATCH]])
            return run_id

        return self.call(f"opening the run {key}", action)

    def find_run(self, experiment: str, key_tag: str, key: str) -> str | None:
        """The id of the run of ``experiment`` tagged ``key_tag=key``, or None."""

        def action(client: Any) -> str | None:
            found = client.search_runs([self.experiment_id(client, experiment)],
                                       filter_string=f"tags.`{key_tag}` = '{_quote(key)}'", max_results=1)
            return found[0].info.run_id if found else None

        return self.call(f"looking up the run {key}", action)

    def log_metrics(self, run_id: str | None, metrics: Mapping[str, float], step: int) -> None:
        """``metrics`` (finite numbers) at ``step`` of the run."""
        values = numeric_metrics(metrics)
        if run_id is None or not values:
            return

        def action(client: Any) -> None:
            from mlflow.entities import Metric

            stamp = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(k, v, stamp, int(step)) for k, v in sorted(values.items())])

        self.call(f"logging metrics of step {step}", action)

    def log_series(self, run_id: str | None, key: str, values: Iterable[float]) -> None:
        """One metric over steps 0, 1, ... (e.g. tokens kept per layer: the step is the layer)."""
        if run_id is None:
            return

        def action(client: Any) -> None:
            from mlflow.entities import Metric

            stamp = int(time.time() * 1000)
            points = [Metric(key, float(v), stamp, i) for i, v in enumerate(values) if math.isfinite(float(v))]
            for start in range(0, len(points), 1000):
                client.log_batch(run_id, metrics=points[start:start + 1000])

        self.call(f"logging {key}", action)

    def set_tags(self, run_id: str | None, tags: Mapping[str, Any]) -> None:
        if run_id is None or not tags:
            return

        def action(client: Any) -> None:
            from mlflow.entities import RunTag

            client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in sorted(tags.items())])

        self.call("setting tags", action)

    def log_files(self, run_id: str | None, files: Mapping[str, bytes], artifact_path: str | None = None) -> None:
        """Upload ``files`` (name -> bytes) as artifacts of the run, under ``artifact_path`` when given."""
        if run_id is None or not files:
            return

        def action(client: Any) -> None:
            with tempfile.TemporaryDirectory(prefix="hvt-mlflow-") as directory:
                for name, data in files.items():
                    with open(os.path.join(directory, name), "wb") as handle:
                        handle.write(data)
                client.log_artifacts(run_id, directory, artifact_path)

        self.call(f"uploading {', '.join(sorted(files))}", action)

    def end_run(self, run_id: str | None, status: str = "FINISHED") -> None:
        if run_id is not None:
            self.call(f"closing the run as {status}", lambda client: client.set_terminated(run_id, status))

    # ------------------------------------------------------------------ model versions

    def mirror_version(self, version: RegistryVersion, run_id: str | None, *, champion: bool) -> str | None:
        """Mirror registry ``version`` as a version of the MLflow registered model of the same name (once: found by
        its ``hvt.registry_version`` tag); move the MLflow alias ``champion`` to it when ``champion``. Returns the
        MLflow version number."""

        def action(client: Any) -> str:
            number = self._mirrored_number(client, version.model, version.version)
            if number is None:
                try:
                    client.create_registered_model(version.model, description="mirrored from the haltingvt registry "
                                                   "(the source of truth)")
                except Exception:  # noqa: BLE001 - it exists already: RESOURCE_ALREADY_EXISTS
                    if client.get_registered_model(version.model) is None:
                        raise
                source = f"runs:/{run_id}/registry" if run_id else version.path
                created = client.create_model_version(
                    version.model, source, run_id=run_id,
                    tags={VERSION_TAG: version.version, "hvt.registry_path": version.path},
                    description=f"{version.model} {version.version} of the haltingvt registry",
                )
                number = str(created.version)
            if champion:
                client.set_registered_model_alias(version.model, "champion", number)
            return number

        return self.call(f"mirroring {version.model} {version.version}", action)

    def mirror_alias(self, model: str, version: str, alias: str = "champion") -> None:
        """Move the MLflow alias of ``model`` to the mirror of registry ``version`` (when it was mirrored)."""

        def action(client: Any) -> None:
            number = self._mirrored_number(client, model, version)
            if number is not None:
                client.set_registered_model_alias(model, alias, number)

        self.call(f"moving {model}'s {alias} alias", action)

    @staticmethod
    def _mirrored_number(client: Any, model: str, version: str) -> str | None:
        try:
            mirrored = client.search_model_versions(f"name = '{_quote(model)}'")
        except Exception as err:  # noqa: BLE001 - no such registered model yet
            if "RESOURCE_DOES_NOT_EXIST" in str(err):
                return None
            raise
        for item in mirrored:
            if (item.tags or {}).get(VERSION_TAG) == version:
                return str(item.version)
        return None


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def run_tags(run_name: str, dataset: str, dataset_version: str, model_variant: str,
             spec: TrackingSpec) -> dict[str, str]:
    """The tags a training run starts with: dataset and version, model variant, the parent sweep run, the
    config's own tags."""
    tags = {"hvt.dataset": dataset, "hvt.dataset_version": dataset_version, "hvt.model_variant": model_variant,
            **spec.tags}
    if spec.parent_run_id:
        tags[PARENT_TAG] = spec.parent_run_id
    return tags


# the per-epoch figures that are bookkeeping, not measurements
EPOCH_SKIP = ("epoch", "step", "attempt_start_epoch", "mid_epoch", "epoch_step")


def epoch_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """What rank 0 logs for one epoch: every figure of the loop's report (train loss parts, val top-1/top-5,
    GFLOPs/clip, throughput, MFU, lr), without the bookkeeping ones."""
    return numeric_metrics(metrics, skip=EPOCH_SKIP)


def evaluation_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The evaluation's scalar figures under ``eval_``: top-1/top-5, GFLOPs per clip as spent (mean and
    percentiles), throughput, the mean halting depth of kept tokens."""
    out = {f"eval_{k.removeprefix('val_')}": v for k, v in numeric_metrics(metrics, skip=("epoch",)).items()}
    histogram = metrics.get("halting_depth_histogram") or []
    total = sum(histogram)
    if total:
        out["eval_halting_depth_mean"] = sum(depth * count for depth, count in enumerate(histogram)) / total
    return out


def record_evaluation(
    spec: TrackingSpec,
    run_id: str | None,
    metrics: Mapping[str, Any],
    files: Mapping[str, bytes],
    *,
    version: RegistryVersion | None = None,
    champion: bool = False,
) -> None:
    """After training: the evaluation's figures (tokens kept per layer and the halting-depth histogram as series
    over layer / depth), ``files`` (report, plots, config.json) as artifacts, the registry version as a tag and
    a mirrored MLflow model version (``champion``: the alias moves to it); then the run is closed."""
    tracker = Tracker(resolve_tracking_uri(spec))
    if run_id is None or not tracker.enabled:
        return
    # a sweep's trial logs its evaluation itself; registering it later adds the version, not the figures again
    logged = tracker.call("reading the run", lambda client: "eval_top1" in client.get_run(run_id).data.metrics)
    if logged is False:
        tracker.log_metrics(run_id, evaluation_metrics(metrics), step=int(metrics.get("epoch", 0) or 0))
        if metrics.get("tokens_per_layer"):
            tracker.log_series(run_id, "eval_tokens_per_layer", metrics["tokens_per_layer"])
        if metrics.get("halting_depth_histogram"):
            tracker.log_series(run_id, "eval_halting_depth_count", metrics["halting_depth_histogram"])
    tracker.log_files(run_id, files)
    tags: dict[str, Any] = {"hvt.eval_set": metrics.get("eval_set", "")}
    if version is not None:
        tags.update({VERSION_TAG: version.version, "hvt.registry_model": version.model,
                     "hvt.registry_path": version.path, "hvt.champion": champion})
        tracker.log_files(run_id, {"version.json": _version_record(version)}, "registry")
    tracker.set_tags(run_id, tags)
    if version is not None:
        tracker.mirror_version(version, run_id, champion=champion)
    tracker.end_run(run_id)


def _version_record(version: RegistryVersion) -> bytes:
    import json

    return (json.dumps(version.as_dict(), indent=2, sort_keys=True, default=str) + "\n").encode()
