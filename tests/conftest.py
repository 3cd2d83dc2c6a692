"""Shared test settings: isolated Prefect home, no telemetry, Ray without auth tokens, realdata location."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from shared_data import shared_path


def pytest_configure(config: pytest.Config) -> None:
    home = Path(os.environ.get("PYTEST_PREFECT_HOME", "/tmp/hvt-test-prefect-home")) / str(os.getpid())
    home.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(home)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    # Ray processes the tests never use, each a Python start-up (1-3 CPU-s) on the 2 shared cores: the worker
    # pool's prestart for a first driver, and Ray Train's preemption watcher actor (it polls the nodes' drain
    # state every 5 s: a cloud's notice; the tests' spot notices are SIGTERMs to a worker, tests/test_train_faults.py)
    os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # Ray keeps idle worker processes up to this many (its default: the node's CPUs, 2 here) instead of ending
    # them a second after their last task; the next run's read/decode tasks and actors then reuse them. Measured
    # with three tiny runs in one Ray: 20.2, 20.1, 21.0 CPU-s by default; 21.2, 15.8, 15.7 with this.
    os.environ.setdefault("RAY_num_workers_soft_limit", "8")
    os.environ.pop("HVT_STORE", None)


@pytest.fixture(scope="module")
def shared_ray():
    """This test process's local Ray as ``hvt.train.ray_env.ensure_ray`` starts it (what a flow or `hvt` command
    run in-process uses), shared by the modules that ask for it instead of one Ray each: starting one costs ~7
    CPU-s, and its warm workers serve the next module's tasks. After each module it is checked: when something
    still holds resources (a leaked actor or placement group) it is shut down, so the next module starts afresh.
    A module that needs a Ray of its own (an environment its workers must inherit) calls ``ray.shutdown()``
    first."""
    import ray

    from hvt.train.ray_env import ensure_ray

    ensure_ray(None)
    yield
    if ray.is_initialized() and not _ray_resources_free(timeout=30.0):
        ray.shutdown()


def _ray_resources_free(timeout: float) -> bool:
    """Whether every resource of the connected Ray is available again within ``timeout`` seconds."""
    import time

    import ray

    deadline = time.monotonic() + timeout
    while True:
        total, free = ray.cluster_resources(), ray.available_resources()
        if all(free.get(name, 0.0) >= amount - 1e-6 for name, amount in total.items()
               if not name.startswith(("node:", "memory", "object_store_memory"))):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


@pytest.fixture
def realdata() -> Path:
    """The read-only real clips and annotations; skipped when absent, except under CI where it must exist."""
    return shared_path("realdata")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run on one thread: avoids oversubscribing the shared cores; restored afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
