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
    os.environ.pop("HVT_STORE", None)


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

