"""The deployments as users run them: a real Prefect server and process worker on 127.0.0.1, `prefect deploy --all`
from prefect.yaml, `prefect deployment run train-haltingvt/<name> --watch`; and for `cluster`, a real Ray head
(`ray start --head`, Jobs API) that the flow submits the training job to.

Tiny runs (3 classes x 6 clips, 1 epoch); every server is started in its own session and stopped by its id.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from servers import free_port, wait_http

from hvt import registry
from pipelines.demo import demo_config

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POOL = "hvt-local"  # the pool named in prefect.yaml
MODEL = demo_config("/unused").model.name  # what the demo and the local deployment train
CLASSES, PER_CLASS = 3, 6


@contextmanager
def _process(args: list[str], env: dict[str, str], log: Path, *, stop_signals: tuple[int, ...],
             grace: float = 15.0) -> Iterator[subprocess.Popen]:
    """Run ``args`` in its own session; on exit send ``stop_signals`` to its process group, then SIGKILL, waiting
    ``grace`` seconds after each."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield proc
    finally:
        for sig in (*stop_signals, signal.SIGKILL):
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
            os.killpg(proc.pid, signal.SIGKILL)  # anything the leader left behind in its group
        except ProcessLookupError:
            pass


@dataclass
class PrefectStack:
    api_url: str
    env: dict[str, str]
    worker_log: Path

    def cli(self, *args: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "prefect"), *args], env=self.env, cwd=REPO, capture_output=True,
                              text=True, timeout=timeout)

    def post(self, path: str, body: dict) -> list[dict]:
        request = urllib.request.Request(f"{self.api_url}{path}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def run_deployment(self, name: str, params: dict, timeout: int) -> tuple[subprocess.CompletedProcess, str]:
        proc = self.cli("deployment", "run", name, "--watch", "--watch-interval", "3", "--watch-timeout",
                        str(timeout), "--params", json.dumps(params), timeout=timeout + 60)
        match = re.search(r"UUID:\s*([0-9a-f-]{36})", proc.stdout)
        assert match, f"no flow run id in the output:\n{proc.stdout}\n{proc.stderr}"
        return proc, match.group(1)

    def flow_run_logs(self, flow_run_id: str) -> str:
        lines, offset = [], 0
        while True:
            page = self.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200,
                                              "offset": offset, "sort": "TIMESTAMP_ASC"})
            lines += [entry["message"] for entry in page]
            if len(page) < 200:
                return "\n".join(lines)
            offset += 200

    def artifact(self, key: str) -> dict:
        found = self.post("/artifacts/filter", {"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC"})
        assert found, f"no artifact with key {key!r}"
        return found[0]


@pytest.fixture(scope="module")
def prefect_stack(tmp_path_factory) -> Iterator[PrefectStack]:
    """Prefect server + `prefect deploy --all` + a process worker on pool hvt-local; stopped worker first."""
    tmp = tmp_path_factory.mktemp("prefect")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "HVT_"))}
    env.update(PREFECT_HOME=str(tmp / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_LOGGING_LEVEL="INFO", RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    # CPU, on a machine the suite keeps busy: no UI to build, and none of the server's loops these tests never
    # use (the scheduler would fill the database with the nightly's future runs; late runs, pauses, worker
    # health, automations). The event services stay: `--watch` follows the flow run's state events.
    env.update(PREFECT_UI_ENABLED="false", **{f"PREFECT_SERVER_SERVICES_{service}_ENABLED": "false" for service in (
        "SCHEDULER", "LATE_RUNS", "PAUSE_EXPIRATIONS", "FOREMAN", "REPOSSESSOR", "CANCELLATION_CLEANUP",
        "TRIGGERS")})
    server_log = tmp / "server.log"
    server_args = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with _process(server_args, env, server_log, stop_signals=(signal.SIGINT, signal.SIGTERM)) as server:
        wait_http(f"{api_url}/health", server, server_log, timeout=120)
        client_env = {**env, "PREFECT_API_URL": api_url, "PREFECT_WORKER_QUERY_SECONDS": "5"}
        stack = PrefectStack(api_url, client_env, tmp / "worker.log")
        created = stack.cli("work-pool", "create", POOL, "--type", "process", "--overwrite",
                            "--base-job-template", str(REPO / "infra/prefect/process-work-pool.json"), timeout=120)
        assert created.returncode == 0, created.stdout + created.stderr
        deployed = stack.cli("--no-prompt", "deploy", "--all", timeout=300)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        listed = stack.cli("deployment", "ls", timeout=120).stdout
        for name in ("train-haltingvt/local", "train-haltingvt/nightly", "train-haltingvt/cluster",
                     "shard-dataset/local", "evaluate-haltingvt/local", "infer-haltingvt/local"):
            assert name in listed, listed
        worker_args = [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process"]
        # stopped when every flow run has ended: nothing to cancel, so no long grace (it was ~15 s of each run)
        with _process(worker_args, client_env, stack.worker_log, stop_signals=(signal.SIGINT, signal.SIGTERM),
                      grace=5.0):
            yield stack


def _tiny_params(store: str, *, seed: int = 0) -> dict:
    from pipelines.demo import demo_config

    config = demo_config(store, epochs=1)
    # one training worker and one decode task at a time (each a Ray worker process of its own): what these tests
    # check is the deployments around the run, not data parallelism
    config = config.model_copy(update={"seed": seed, "scaling": config.scaling.model_copy(update={"num_workers": 1}),
                                       "data": config.data.model_copy(update={"decode_workers": 1})})
    synthetic = {"classes": CLASSES, "per_class": PER_CLASS, "seed": 1, "frames": 16, "width": 64, "height": 64}
    return {"config": config.model_dump(mode="json"), "synthetic": synthetic}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("store"))


@pytest.mark.timeout(420)
def test_local_deployment_registers_a_version_and_publishes_the_report(prefect_stack, store):
    proc, run_id = prefect_stack.run_deployment("train-haltingvt/local", _tiny_params(store), timeout=330)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\nworker:\n{prefect_stack.worker_log.read_text()[-4000:]}"
    assert "Completed" in proc.stdout
    versions = registry.list_versions(store, MODEL)
    assert [v.version for v in versions] == ["v1"]
    assert registry.get_alias(store, MODEL) == "v1"
    assert versions[0].metrics["num_classes"] == CLASSES
    report = prefect_stack.artifact(f"report-{MODEL}")
    assert report["flow_run_id"] == run_id
    assert f"{MODEL}: evaluation on synthetic-motion/" in report["data"]
    assert "val top-1" in prefect_stack.flow_run_logs(run_id)


@pytest.mark.timeout(240)
def test_nightly_without_new_data_finishes_cleanly_and_says_why(prefect_stack, store):
    if not registry.list_versions(store, MODEL):
        pytest.skip("needs the local deployment's run first")
    params = {"config": _tiny_params(store)["config"]}  # the deployment's only_if_new_data=true stays
    proc, run_id = prefect_stack.run_deployment("train-haltingvt/nightly", params, timeout=180)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert [v.version for v in registry.list_versions(store, MODEL)] == ["v1"]  # nothing retrained
    assert "no newer dataset" in prefect_stack.flow_run_logs(run_id)
    assert "already trained on it" in prefect_stack.artifact(f"nightly-{MODEL}")["data"]


@dataclass
class RayHead:
    jobs: str  # the Jobs API (dashboard) address, for the cluster deployment
    gcs: str  # host:port, for a flow run's `scaling.ray_address`


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory) -> Iterator[RayHead]:
    """A local Ray head with the Jobs API on free loopback ports."""
    tmp = tmp_path_factory.mktemp("ray")
    gcs_port, dashboard_port = free_port(), free_port()
    temp_dir = Path(f"/tmp/hvt-ray-{os.getpid()}")  # short: Ray's socket paths must stay under 107 bytes
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    args = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}", "--include-dashboard=true",
            "--num-cpus=2", f"--temp-dir={temp_dir}", "--disable-usage-stats",
            # the job agent's HTTP port defaults to 52365: another Ray on the machine holding it leaves this head
            # without a job agent ("No available agent to submit job" for good)
            f"--dashboard-agent-listen-port={free_port()}"]
    log = tmp / "ray-head.log"
    address = f"http://127.0.0.1:{dashboard_port}"
    try:
        # a throw-away head: nothing of it needs a clean shutdown (its SIGTERM handling takes ~15 s)
        with _process(args, env, log, stop_signals=(signal.SIGTERM,), grace=3.0) as head:
            wait_http(f"{address}/api/version", head, log, timeout=120)
            _wait_for_job_agent(address, timeout=240)
            yield RayHead(jobs=address, gcs=f"127.0.0.1:{gcs_port}")
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_job_agent(address: str, timeout: float) -> None:
    """Until a no-op job has run: the dashboard answers before the head's job agent takes submissions (500 "No
    available agent to submit job"), later still on a loaded machine; the tests must not depend on how much."""
    from ray.job_submission import JobSubmissionClient

    from pipelines.cluster import call_jobs_api

    log = logging.getLogger("ray-head")
    client = JobSubmissionClient(address)
    job = call_jobs_api("a readiness job", lambda: client.submit_job(entrypoint="true"), address=address,
                        wait_s=timeout, logger=log)
    deadline = time.monotonic() + timeout
    while str(client.get_job_status(job).value) not in ("SUCCEEDED", "FAILED", "STOPPED"):
        assert time.monotonic() < deadline, f"the readiness job {job} did not finish within {timeout}s"
        time.sleep(1)
    assert str(client.get_job_status(job).value) == "SUCCEEDED", client.get_job_logs(job)


def _ray_job(address: str, logs: str):
    from ray.job_submission import JobSubmissionClient

    match = re.search(r"submitted Ray job (hvt-[0-9a-f-]+)", logs)
    assert match, logs[-4000:]
    return JobSubmissionClient(address).get_job_info(match.group(1))


@pytest.mark.timeout(420)
def test_cluster_deployment_trains_as_a_ray_job(prefect_stack, ray_head, store):
    ray_head = ray_head.jobs
    before = len(registry.list_versions(store, MODEL))
    params = _tiny_params(store, seed=7)  # another config: a new run, not a resume of the local one
    params["cluster"] = {"address": ray_head, "python": sys.executable, "working_dir": str(REPO),
                         "env_vars": {"HVT_TEST_MARKER": "from-runtime-env"}}
    proc, run_id = prefect_stack.run_deployment("train-haltingvt/cluster", params, timeout=330)
    logs = prefect_stack.flow_run_logs(run_id)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{logs[-6000:]}"
    job = _ray_job(ray_head, logs)
    assert str(job.status.value) == "SUCCEEDED"
    assert job.entrypoint.startswith(f"{sys.executable} -m hvt.train.job --config-json ")
    assert job.runtime_env["env_vars"]["HVT_TEST_MARKER"] == "from-runtime-env"
    assert job.runtime_env["working_dir"].startswith("gcs://")  # the checkout was uploaded
    assert f"[ray job {job.submission_id}]" in logs  # the job's logs were streamed into the flow run
    assert "HVT_JOB_SUMMARY" in logs
    versions = registry.list_versions(store, MODEL)
    assert len(versions) == before + 1
    assert versions[-1].lineage["config"]["seed"] == 7
    assert prefect_stack.artifact(f"report-{MODEL}")["flow_run_id"] == run_id


@pytest.mark.timeout(240)
def test_cluster_job_failure_fails_the_flow_run(prefect_stack, ray_head, tmp_path):
    """A job that fails on the cluster fails the flow run, and the flow run says why."""
    ray_head = ray_head.jobs
    params = _tiny_params(str(tmp_path / "empty-store"))
    del params["synthetic"]
    params["config"]["dataset_version"] = "v-missing"  # the flow trusts a pinned version; the job finds none
    params["cluster"] = {"address": ray_head, "python": sys.executable}
    proc, run_id = prefect_stack.run_deployment("train-haltingvt/cluster", params, timeout=180)
    logs = prefect_stack.flow_run_logs(run_id)
    assert proc.returncode != 0, proc.stdout
    assert str(_ray_job(ray_head, logs).status.value) == "FAILED"
    assert "ended FAILED" in logs and "v-missing" in logs, logs[-4000:]


def _colour_config(store: str, ray_address: str, *, strong: bool) -> dict:
    """A tiny model on the colour set (tests/colour_clips.py), one worker on the Ray at ``ray_address``:
    ``strong`` learns it (3 epochs of 7 steps at lr 3e-3: more steps than the 4 epochs of 4 steps on 2 workers that
    reached val top-1 1.0 when measured), the other barely moves from its random init (1 epoch at lr 1e-7)."""
    from hvt.config import TrainConfig

    optim = {"epochs": 3, "lr": 3e-3, "warmup_epochs": 0, "batch_size": 4} if strong else \
        {"epochs": 1, "lr": 1e-7, "warmup_epochs": 0, "batch_size": 4}
    return TrainConfig.model_validate({
        "store": store, "dataset_name": "colours", "registry_name": "colours-nightly",
        "model": {"name": "haltingvt-nano-g05-b10"},
        "data": {"num_frames": 8, "frame_interval": 2, "train_short_side": [32, 40], "test_short_side": 32,
                 "crop_size": 32, "decode_cpus": 0.5},
        "optim": optim, "scaling": {"num_workers": 1, "cpus_per_worker": 0.5, "ray_address": ray_address},
    }).model_dump(mode="json")


@pytest.mark.timeout(1200)
def test_three_nights_build_then_move_the_champion_then_skip(prefect_stack, ray_head, tmp_path):
    """The nightly deployment over three "nights" of one source folder: night 1 shards and trains (a weak model,
    the first champion); new videos arrive; night 2 ingests them into a new version (the old samples reused, not
    processed again), fine-tunes the champion on it and, the champion re-scored on the new version's val set,
    promotes the clearly better challenger; night 3 finds nothing new and says so."""
    # the flow runs train on the module's Ray head (not a local Ray each): this test is about the nightly's
    # decisions, and the local deployment's test already covers a flow run starting its own Ray
    from colour_clips import write_colour_set

    from hvt.ingest import list_dataset_versions

    store, source = str(tmp_path / "store"), tmp_path / "source"
    model = "colours-nightly"
    write_colour_set(source, per_class=9)
    src = {"annotations": str(source / "annotations.csv"), "videos": str(source / "videos"), "workers": 1}

    proc, run1 = prefect_stack.run_deployment(
        "train-haltingvt/nightly", {"config": _colour_config(store, ray_head.gcs, strong=False), "source": src}, timeout=420)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{prefect_stack.flow_run_logs(run1)[-4000:]}"
    (v1,) = registry.list_versions(store, model)
    assert registry.get_alias(store, model) == "v1" and v1.lineage["init_from"] is None
    (d1,) = list_dataset_versions(store, "colours")

    write_colour_set(source, per_class=12, start=9)  # 9 new videos (3 per class) arrive
    proc, run2 = prefect_stack.run_deployment(
        "train-haltingvt/nightly", {"config": _colour_config(store, ray_head.gcs, strong=True), "source": src}, timeout=600)
    logs2 = prefect_stack.flow_run_logs(run2)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{logs2[-4000:]}"
    d2 = list_dataset_versions(store, "colours")[-1]
    assert d2.version != d1.version
    v2 = registry.list_versions(store, model)[-1]
    assert v2.version == "v2" and v2.lineage["dataset_version"] == d2.version
    assert v2.lineage["init_from"]["version"] == "v1"  # warm-started from the champion
    assert registry.get_alias(store, model) == "v2", f"{v2.metrics.get('promotion')}\n{logs2[-4000:]}"
    assert f"ingest: colours {d2.version}: 9 videos processed, 27 reused" in logs2  # only the new ones

    proc, run3 = prefect_stack.run_deployment(
        "train-haltingvt/nightly", {"config": _colour_config(store, ray_head.gcs, strong=True), "source": src}, timeout=300)
    logs3 = prefect_stack.flow_run_logs(run3)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{logs3[-4000:]}"
    assert "nothing new" in logs3
    assert [v.version for v in registry.list_versions(store, model)] == ["v1", "v2"]
    assert [d.version for d in list_dataset_versions(store, "colours")] == [d1.version, d2.version]
