"""Run the training job on a remote Ray cluster through the Ray Jobs API (Ray Client is not for Ray Train).

The flow submits ``python -m hvt.train.job`` with a ``runtime_env``, streams the job's logs into the flow run,
stops the job if the flow is cancelled or times out, and turns a failed or stopped job into a failed flow run.
The store must be one the cluster can reach (``s3://`` in production); the job writes its summary there.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import time
import uuid
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from hvt import storage
from hvt.config import TrainConfig

# What never travels to the cluster when `working_dir` uploads a checkout (the 500 MiB upload limit, and data).
WORKING_DIR_EXCLUDES = [
    ".git", ".venv", "venv", "hvt-store", "**/__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info",
    "*.mp4", "*.tar", "docs", "bench",
]
_LOG_CHUNK_CHARS = 8000
_TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


class ClusterJobError(RuntimeError):
    """The Ray job failed, was stopped, timed out or never started; the message says which and why."""


class ClusterSpec(BaseModel):
    """Where and how the training job runs on a Ray cluster."""

    model_config = ConfigDict(extra="forbid")

    address: str = Field(
        default="http://127.0.0.1:8265",
        description="Ray Jobs API (the dashboard) of the head node, e.g. http://ray-head:8265",
    )
    working_dir: str | None = Field(
        default=None,
        description="upload this folder (e.g. '.' for the checkout) as the job's code; None: use the code "
        "installed on the cluster (the infra/Dockerfile image)",
    )
    pip: list[str] = Field(default_factory=list, description="extra pip packages for the job's runtime_env")
    env_vars: dict[str, str] = Field(
        default_factory=dict,
        description="non-secret environment for the job (e.g. AWS_ENDPOINT_URL); the cluster holds credentials",
    )
    python: str = Field(default="python", description="interpreter on the cluster that has hvt installed")
    entrypoint_num_cpus: float = Field(default=0, ge=0, description="CPUs reserved for the job's driver")
    timeout_minutes: float = Field(default=24 * 60, gt=0, description="stop the job and fail after this long")
    submit_wait_s: float = Field(
        default=180, ge=0, description="how long to retry a Jobs API that is still starting (connection refused, "
        "'No available agent to submit job') before failing"
    )


def build_entrypoint(cfg: TrainConfig, cluster: ClusterSpec, summary_url: str) -> str:
    """The shell command the job supervisor runs; every argument is quoted (the config is JSON)."""
    return " ".join(
        [
            shlex.quote(cluster.python), "-m", "hvt.train.job",
            "--config-json", shlex.quote(cfg.model_dump_json()),
            "--summary-url", shlex.quote(summary_url),
        ]
    )


def build_runtime_env(cluster: ClusterSpec) -> dict[str, Any]:
    runtime_env: dict[str, Any] = {
        # Ray Data and Ray Train log to the driver; keep usage stats off on the workers too
        "env_vars": {"RAY_USAGE_STATS_ENABLED": "0", **cluster.env_vars},
    }
    if cluster.working_dir:
        runtime_env["working_dir"] = cluster.working_dir
        runtime_env["excludes"] = list(WORKING_DIR_EXCLUDES)
    if cluster.pip:
        runtime_env["pip"] = list(cluster.pip)
    return runtime_env


def _check_store_reachable(store: str, address: str, logger: Any) -> None:
    # 127.0.0.1 is no proof of a local cluster (a `ray dashboard` tunnel gives it too): warn for any local store;
    # the job's pre-flight (hvt.train.preflight) then checks from every node before any worker trains
    if storage.is_local(store):
        logger.warning(
            "store %s is a local folder: every node of the Ray cluster at %s must see it at the same path (the "
            "job's pre-flight checks this before training). On a cloud cluster use an s3:// store (config.store or "
            "$HVT_STORE).", store, address
        )


async def _follow_job(client: Any, job_id: str, logger: Any) -> str:
    """Stream the job's logs into the flow run until the job ends; return its final status."""
    pending = ""
    async for chunk in client.tail_job_logs(job_id):
        pending += chunk
        if len(pending) >= _LOG_CHUNK_CHARS or pending.endswith("\n"):
            text = pending.rstrip("\n")
            if text:
                logger.info("[ray job %s]\n%s", job_id, text)
            pending = ""
    if pending.strip():
        logger.info("[ray job %s]\n%s", job_id, pending.rstrip("\n"))
    # the log stream closes when the job ends; the status may lag it by a moment
    for _ in range(60):
        status = str(client.get_job_status(job_id).value)
        if status in _TERMINAL:
            return status
        await asyncio.sleep(1)
    return str(client.get_job_status(job_id).value)


def _stop_quietly(client: Any, job_id: str, logger: Any) -> None:
    try:
        if str(client.get_job_status(job_id).value) not in _TERMINAL:
            client.stop_job(job_id)
            logger.warning("stopped Ray job %s", job_id)
    except Exception as err:  # noqa: BLE001 - best effort on the way out; the original error is what matters
        logger.warning("could not stop Ray job %s: %s", job_id, err)


# While a head starts, its Jobs API refuses connections, then answers 500 "No available agent to submit job" until
# its job agent has registered (seconds after `ray start --head`, longer on a loaded machine). Those answers are
# retried within `ClusterSpec.submit_wait_s`; anything else (a wrong address, a rejected job) is not.
_TRANSIENT_JOBS_API = ("No available agent to submit job", "Connection refused", "Failed to connect",
                       "Max retries exceeded", "Connection reset", "Remote end closed", "503", "502")


def _is_transient_jobs_api(err: BaseException) -> bool:
    text = f"{type(err).__name__}: {err}"
    return isinstance(err, ConnectionError) or any(marker in text for marker in _TRANSIENT_JOBS_API)


def call_jobs_api(what: str, call: Any, *, address: str, wait_s: float, logger: Any, pause_s: float = 2.0) -> Any:
    """``call()``, retried while the Jobs API at ``address`` gives a transient answer, for at most ``wait_s``
    seconds; then one ``ClusterJobError`` line naming the address and the last answer."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return call()
        except (ConnectionError, RuntimeError, ValueError, OSError) as err:
            if not _is_transient_jobs_api(err):
                raise
            if time.monotonic() > deadline:
                last = str(err).strip().splitlines()[-1][:200] if str(err).strip() else type(err).__name__
                raise ClusterJobError(
                    f"the Ray Jobs API at {address} was not ready for {what} within {wait_s:.0f} s (last answer: "
                    f"{last}). Is the head up with its dashboard (`ray start --head --dashboard-host ...`), and "
                    "is the address its dashboard port?"
                ) from err
            logger.info("the Ray Jobs API at %s is not ready yet (%s); retrying", address, type(err).__name__)
            time.sleep(pause_s)


@task(name="train-on-cluster", cache_policy=NO_CACHE)
def train_on_cluster(config: TrainConfig, cluster: ClusterSpec) -> dict[str, Any]:
    """Submit train -> evaluate -> register as a Ray job, follow it, return the job's summary."""
    from ray.job_submission import JobSubmissionClient

    logger = get_run_logger()
    _check_store_reachable(config.store, cluster.address, logger)
    job_id = f"hvt-{config.fingerprint()}-{uuid.uuid4().hex[:8]}"
    summary_url = storage.join(config.store, "jobs", f"{job_id}.json")
    wait = {"address": cluster.address, "wait_s": cluster.submit_wait_s, "logger": logger}
    try:
        client = call_jobs_api("a connection", lambda: JobSubmissionClient(cluster.address), **wait)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise ClusterJobError(
            f"cannot reach the Ray Jobs API at {cluster.address}: {err}. Is the head started with the "
            "dashboard (`ray start --head --dashboard-host ...`) and the address its dashboard port?"
        ) from err
    call_jobs_api("the job submission", lambda: client.submit_job(
        entrypoint=build_entrypoint(config, cluster, summary_url),
        submission_id=job_id,
        runtime_env=build_runtime_env(cluster),
        entrypoint_num_cpus=cluster.entrypoint_num_cpus,
        metadata={"dataset": f"{config.dataset_name}/{config.dataset_version}", "model": config.model.name},
    ), **wait)
    logger.info("submitted Ray job %s to %s", job_id, cluster.address)
    try:
        status = asyncio.run(asyncio.wait_for(_follow_job(client, job_id, logger), cluster.timeout_minutes * 60))
    except asyncio.TimeoutError:
        _stop_quietly(client, job_id, logger)
        raise ClusterJobError(f"Ray job {job_id} did not finish within {cluster.timeout_minutes} min; stopped it") from None
    except BaseException:  # flow cancelled or crashed while following: do not leave the job running unattended
        _stop_quietly(client, job_id, logger)
        raise
    if status != "SUCCEEDED":
        info = client.get_job_info(job_id)
        tail = "\n".join(client.get_job_logs(job_id).splitlines()[-30:])
        raise ClusterJobError(
            f"Ray job {job_id} on {cluster.address} ended {status}: {info.message or 'no message'}\n"
            f"last log lines:\n{tail}"
        )
    storage.get_fs(summary_url)[0].invalidate_cache()
    summary = json.loads(storage.read_text(summary_url))
    summary["ray_job"] = {"id": job_id, "address": cluster.address}
    return summary
