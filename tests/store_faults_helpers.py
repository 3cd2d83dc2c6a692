"""Helpers shared by the store fault tests: run `hvt` or a registration in a child process (so a kill or a race is
real), with fault points from ``hvt.store_faults``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

REGISTER_SCRIPT = """
import json, sys, time
from hvt import registry
store, model, index, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
while time.time() < start:  # every process leaves the starting line together
    time.sleep(0.001)
data = (f"weights of writer {index} ".encode()) * 20000
v = registry.register_version(store, model, files={"model.pt": data, "report.md": b"# r\\n"},
                              metrics={"writer": index}, lineage={"writer": index}, created_at="2026-01-01T00:00:00")
print(json.dumps({"writer": index, "version": v.version}))
"""


def env(**extra: str) -> dict[str, str]:
    out = {**os.environ, "PYTHONPATH": str(REPO), "HVT_STORE_RETRY_SECONDS": "3", **extra}
    out.pop("HVT_STORE", None)
    return out


def hvt(*args: str, timeout: float = 300, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hvt.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env(**extra_env), cwd=REPO)


def register_at_once(store: str, model: str, n: int, **extra_env: str) -> list[dict]:
    """``n`` processes call ``register_version`` at the same moment; returns what each was told."""
    start = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", REGISTER_SCRIPT, store, model, str(i), str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(**extra_env))
             for i in range(n)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def register_one(store: str, model: str, index: int, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", REGISTER_SCRIPT, store, model, str(index), "0"],
                          capture_output=True, text=True, timeout=180, env=env(**extra_env))


def writer_bytes(index: int) -> bytes:
    return (f"weights of writer {index} ".encode()) * 20000
