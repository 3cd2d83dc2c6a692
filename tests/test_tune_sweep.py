"""`hvt sweep` end to end on the tiny synthetic set, tracked by a real MLflow server started here.

One sweep (a 2x2 grid: keep rate of the last Glimpser block x halting centre, 1 epoch, nano model, one worker
per trial, two trials at a time) runs as `hvt sweep` in a subprocess on the module's Ray cluster. It is killed
once its first trial has finished (the others then are still training, or waiting to) and run again: the re-run
restores the Tune experiment, keeps the finished trial (its record and run are not touched again), trains the
rest, prints the Pareto front as JSON, writes the plot and the report and registers the front points (lineage:
the sweep and the trial), the budget's pick as the candidate for champion.

The MLflow server (sqlite backend, local artifact root, 127.0.0.1 on a free port) is read back through the
MLflow client: the sweep's parent run with the four trials nested, a trial's whole config as params, its
per-epoch metrics with steps, its report / plots / config.json as artifacts, the registry version as a tag and
the mirrored model version carrying the ``champion`` alias. Last, the server is stopped in the middle of a run's
tracking calls: the calls go on without an error and leave one warning.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import free_port, wait_http

from hvt import registry
from hvt.config import ModelSpec, OptimConfig, RuntimeSpec, ScalingSpec, TrackingSpec, TrainConfig
from hvt.data import DataConfig
from hvt.tune.space import SweepConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]
pytest.importorskip("mlflow")

REPO = Path(__file__).resolve().parents[1]
MODEL = "haltingvt-nano-g05-b10"
GRID = {"keep_rate": [0.3, 0.7], "beta": [5.0, 20.0]}
EXPERIMENT = "hvt-test-sweep"
FIRST_TRIAL_BOUND_S, RESUMED_SWEEP_BOUND_S = 600, 900


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM then SIGKILL to the process group of ``proc`` (started in its own session by this test)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            break
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything left in its group (Ray's processes of a killed driver)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server: sqlite backend, local artifact root, 127.0.0.1 on a free port."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = root / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--default-artifact-root",
             str(root / "artifacts"), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:  # readiness is waited for by the first user, so the server starts while the dataset is made
        yield {"uri": f"http://127.0.0.1:{port}", "proc": proc, "log": log,
               "wait": lambda: wait_http(f"http://127.0.0.1:{port}/health", proc, log, timeout=90)}
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """One Ray for the module (both runs of the sweep join it): 4 logical CPUs on the 2 cores, enough for the two
    trials that train at a time (a trial's Ray Data pipeline needs a whole CPU beside its worker's half)."""
    from raycluster import RayCluster

    with RayCluster(tmp_path_factory.mktemp("ray")) as cluster:
        cluster.add_node(cpus=4, resources={})
        yield cluster


@pytest.fixture(scope="module")
def dataset_store(tmp_path_factory) -> tuple[str, str]:
    from hvt.ingest import ShardConfig, make_synthetic_dataset, shard_dataset

    root = tmp_path_factory.mktemp("sweep")
    made = make_synthetic_dataset(str(root / "videos"), classes=3, per_class=6, seed=5, frames=16, size=(64, 64))
    store = str(root / "store")
    result = shard_dataset(ShardConfig(annotations=made.annotations_csv, videos=made.videos_dir, store=store,
                                       name="synth"))
    return store, result.version


def _sweep_config(store: str, tracking_uri: str, ray_address: str) -> SweepConfig:
    base = TrainConfig(
        store=store,
        dataset_name="synth",
        model=ModelSpec(name=MODEL),
        data=DataConfig(num_frames=8, frame_interval=2, train_short_side=(32, 40), test_short_side=32,
                        crop_size=32, randaugment=False, static_clips=True, decode_cpus=0.25),
        optim=OptimConfig(epochs=1, warmup_epochs=0, batch_size=4, lr=1e-3),
        scaling=ScalingSpec(num_workers=1, cpus_per_worker=0.5, max_failures=0, ray_address=ray_address),
        runtime=RuntimeSpec(log_every_steps=1),
        tracking=TrackingSpec(tracking_uri=tracking_uri, experiment=EXPERIMENT),
    )
    # two trials at a time: the kill after the first finished one catches at least the last two unfinished
    return SweepConfig(base=base, grid=GRID, max_concurrent=2, budget_gflops=1.0)


def _start_sweep(config: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_DEDUP_LOGS": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([sys.executable, "-m", "hvt.cli", "sweep", "--config", str(config), "--json"],
                            stdout=log.with_suffix(".json").open("w"), stderr=log.open("w"), env=env, cwd=REPO,
                            start_new_session=True)


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory, mlflow_server, dataset_store, ray_cluster):
    """The sweep killed after its first finished trial, then run again to the end."""
    store, version = dataset_store
    mlflow_server["wait"]()
    root = tmp_path_factory.mktemp("sweep-run")
    sweep = _sweep_config(store, mlflow_server["uri"], ray_cluster.address)
    config = root / "sweep.json"
    config.write_text(sweep.model_dump_json())
    trials = Path(store) / "sweeps" / sweep.resolved_name(version) / "trials"
    first_log = root / "first.log"
    proc = _start_sweep(config, first_log)
    try:
        # bounds, not expectations: a trial takes ~30-60 s on a quiet 2-core machine, several times that when the
        # suite's other Ray and Prefect tests share the cores
        deadline = time.monotonic() + FIRST_TRIAL_BOUND_S
        while not (trials.exists() and any(trials.glob("*.json"))):
            if proc.poll() is not None:
                pytest.fail(f"the sweep exited (rc {proc.returncode}) before any trial finished:\n"
                            f"{first_log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no trial finished within {FIRST_TRIAL_BOUND_S} s:\n{first_log.read_text()[-4000:]}")
            time.sleep(0.5)
    finally:
        _stop(proc, grace=5)
    finished_first = {p.name: p.stat().st_mtime_ns for p in trials.glob("*.json")}
    second_log = root / "second.log"
    proc = _start_sweep(config, second_log)
    try:
        proc.wait(timeout=RESUMED_SWEEP_BOUND_S)
    finally:
        _stop(proc, grace=5)
    assert proc.returncode == 0, second_log.read_text()[-5000:]
    summary = json.loads(second_log.with_suffix(".json").read_text())
    return {"store": store, "version": version, "summary": summary, "finished_first": finished_first,
            "trials": trials, "log": second_log.read_text(), "sweep": sweep}


def test_sweep_prints_the_front_writes_the_plot_and_registers_the_front(sweep_run):
    summary, store = sweep_run["summary"], sweep_run["store"]
    points = {p["trial"]: p for p in summary["points"]}
    assert len(points) == len(sweep_run["sweep"].points()) == 4 and all(p["status"] == "evaluated" for p in points.values())
    assert {tuple(sorted(p["params"].items())) for p in points.values()} == {
        (("beta", b), ("keep_rate", k)) for k in GRID["keep_rate"] for b in GRID["beta"]}
    front = [points[t] for t in summary["front"]]
    assert front, "the front is empty"
    for point in points.values():  # nothing off the front beats a front point in both figures
        for other in front:
            assert not (point["top1"] > other["top1"] and point["gflops"] < other["gflops"])
    for a, b in zip(front, front[1:], strict=False):  # cheapest first, each dearer point more accurate
        assert a["gflops"] <= b["gflops"]
        assert a["top1"] < b["top1"] or (a["top1"], a["gflops"]) == (b["top1"], b["gflops"])
    # keep rate decides compute: the G0.3 trials spend fewer GFLOPs than the G0.7 ones at the same beta
    by_params = {(p["params"]["keep_rate"], p["params"]["beta"]): p["gflops"] for p in points.values()}
    assert by_params[(0.3, 20.0)] < by_params[(0.7, 20.0)]
    assert Path(summary["plot"]).read_bytes().startswith(b"\x89PNG")
    report = Path(summary["report"]).read_text()
    assert "## Pareto front" in report and all(t in report for t in summary["front"])
    # every front point is a version whose lineage names the sweep and the trial
    assert set(summary["versions"]) == set(summary["front"])
    model = sweep_run["sweep"].base.resolved_registry_name()
    for trial, version in summary["versions"].items():
        lineage = registry.get_version(store, model, version).lineage
        assert lineage["sweep"]["name"] == summary["name"] and lineage["sweep"]["trial"] == trial
    # the pick: the most accurate front point within the budget; the only candidate for champion
    within = [p for p in front if p["gflops"] <= 1.0]
    assert summary["picked"] == max(within, key=lambda p: (p["top1"], -p["gflops"]))["trial"]
    assert registry.get_alias(store, model) == summary["versions"][summary["picked"]]


def test_killed_sweep_resumes_finished_trials_instead_of_starting_over(sweep_run):
    trials = sweep_run["trials"]
    # two trials at a time: the kill came while the last two were unfinished, so the re-run trained them
    assert 1 <= len(sweep_run["finished_first"]) <= 2, sweep_run["finished_first"]
    for name, mtime in sweep_run["finished_first"].items():  # a finished trial was not trained or scored again
        assert (trials / name).stat().st_mtime_ns == mtime, f"{name} was redone after the restart"
    assert len(list(trials.glob("*.json"))) == 4
    assert "resuming" in sweep_run["log"]


def test_mlflow_holds_the_sweep_its_trials_their_metrics_artifacts_and_the_champion(sweep_run, mlflow_server):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server["uri"])
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    (parent,) = [r for r in runs if r.data.tags.get("hvt.sweep") == sweep_run["summary"]["name"]
                 and "hvt.run_name" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    # every trial's run holds its config, the trials off the front (never registered) too
    assert all("config.json" in {a.path for a in client.list_artifacts(r.info.run_id)} for r in children)
    assert parent.info.status == "FINISHED"
    assert {"front.png", "report.md"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}

    store, model = sweep_run["store"], sweep_run["sweep"].base.resolved_registry_name()
    champion = registry.get_version(store, model, "champion")
    (run,) = [r for r in children if r.data.tags.get("hvt.run_name") == champion.lineage["run_name"]]
    params, tags = run.data.params, run.data.tags
    assert params["model.name"] == MODEL and params["optim.epochs"] == "1" and params["dataset_name"] == "synth"
    assert json.loads(params["model.overrides.keep_rate"])[-1] == pytest.approx(
        champion.lineage["sweep"]["point"]["keep_rate"])
    assert tags["hvt.dataset_version"] == sweep_run["version"] and tags["hvt.registry_version"] == champion.version
    for key in ("val_top1", "val_gflops", "train_loss", "train_clips_per_s"):
        history = client.get_metric_history(run.info.run_id, key)
        assert {m.step for m in history} == {0}, key  # one epoch (logged again only if redone after the kill)
    assert client.get_metric_history(run.info.run_id, "val_top1")[0].value == pytest.approx(
        json.loads((sweep_run["trials"] / f"{run.data.tags['hvt.run_name']}.json").read_text())["train_metrics"][
            "val_top1"])
    layers = client.get_metric_history(run.info.run_id, "eval_tokens_per_layer")
    assert [m.step for m in layers] == list(range(len(champion.metrics["tokens_per_layer"])))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.md", "config.json", "accuracy_vs_gflops.png"} <= artifacts, artifacts
    # the registry version mirrored as an MLflow model version, with the champion alias where ours is
    mirrored = client.get_model_version_by_alias(model, "champion")
    assert mirrored.tags["hvt.registry_version"] == champion.version and mirrored.run_id == run.info.run_id
    assert len(client.search_model_versions(f"name = '{model}'")) == len(sweep_run["summary"]["front"])


def test_tracking_server_stopped_mid_run_leaves_one_warning_and_no_error(mlflow_server, caplog):
    """(Last in the module: it stops the server.) The hooks a training run calls (open, epochs, evaluation, artifacts, mirror, close) with the server
    stopped after the first epoch: nothing raises, one warning, and the epoch logged before the stop is kept."""
    from hvt.tune import tracking

    mlflow_server["wait"]()
    caplog.set_level(logging.WARNING, logger="hvt.tune.tracking")
    spec = TrackingSpec(tracking_uri=mlflow_server["uri"], experiment=EXPERIMENT + "-stop")
    tracker = tracking.Tracker(spec.tracking_uri)
    run_id = tracker.open_run(spec.experiment, tracking.RUN_TAG, "run-stop", run_name="run-stop", tags={},
                              params={"optim.lr": "0.001"})
    assert run_id is not None
    tracker.log_metrics(run_id, {"val_top1": 0.25}, step=0)
    _stop(mlflow_server["proc"])
    for epoch in (1, 2):
        tracking.Tracker(spec.tracking_uri).log_metrics(run_id, {"val_top1": 0.5}, step=epoch)
    version = registry.RegistryVersion("m", "v1", "/nowhere/v1", {}, {})
    tracking.record_evaluation(spec, run_id, {"val_top1": 0.5, "epoch": 2}, {"report.md": b"# r"},
                               version=version, champion=True)
    warnings = [r.getMessage() for r in caplog.records  # urllib3's own retry line is not ours
                if r.levelno >= logging.WARNING and r.name == "hvt.tune.tracking"]
    assert len(warnings) == 1 and mlflow_server["uri"] in warnings[0], warnings
    assert tracking.tracking_failed(spec.tracking_uri)
