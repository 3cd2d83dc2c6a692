"""Training-loop stand-ins for tests/test_train_retries.py, importable by Ray Train workers (tests/ is on the
driver's sys.path, which Ray hands to its workers). Each worker appends ``rank <r>`` to the file named in
``$HVT_TEST_ATTEMPTS`` when it starts, so the test counts attempts (rank 0's lines) from outside."""

from __future__ import annotations

import os
import signal
import tempfile
from typing import Any

import ray.train


def _record_start() -> int:
    rank = ray.train.get_context().get_world_rank()
    with open(os.environ["HVT_TEST_ATTEMPTS"], "a") as handle:
        handle.write(f"rank {rank}\n")
    return rank


def missing_file_loop(loop_config: dict[str, Any]) -> None:
    """Fails as a worker does when a configured path is missing on its node: the same error at every attempt."""
    _record_start()
    raise FileNotFoundError(2, "No such file or directory", "/nowhere/pretrained.pt")


def dies_once_loop(loop_config: dict[str, Any]) -> None:
    """Rank 1's process is killed in the first attempt (a lost worker); the next attempt reports a checkpoint."""
    rank = _record_start()
    died = os.environ["HVT_TEST_ATTEMPTS"] + ".died"
    if rank == 1 and not os.path.exists(died):
        open(died, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    with tempfile.TemporaryDirectory() as directory:
        with open(os.path.join(directory, "marker"), "w") as handle:
            handle.write("done")
        checkpoint = ray.train.Checkpoint.from_directory(directory) if rank == 0 else None
        ray.train.report({"val_top1": 0.5, "epoch": 0}, checkpoint=checkpoint)
