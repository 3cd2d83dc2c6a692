"""Training-loop stand-ins for tests/test_train_retries.py, shipped to Ray Train workers by value (the test
registers this module with cloudpickle). Each worker appends ``rank <r>`` to the file named after the
run in the folder ``$HVT_TEST_ATTEMPTS_DIR`` (set before Ray starts, so workers inherit it) when it starts, so the
test counts attempts (rank 0's lines) from outside."""

from __future__ import annotations

import os
import signal
import tempfile
from typing import Any

import ray.train


def attempts_file(run_name: str) -> str:
    return os.path.join(os.environ["HVT_TEST_ATTEMPTS_DIR"], run_name)


def _record_start() -> int:
    context = ray.train.get_context()
    rank = context.get_world_rank()
    with open(attempts_file(context.get_experiment_name()), "a") as handle:
        handle.write(f"rank {rank}\n")
    return rank


def missing_file_loop(loop_config: dict[str, Any]) -> None:
    """Fails as a worker does when a configured path is missing on its node: the same error at every attempt."""
    _record_start()
    raise FileNotFoundError(2, "No such file or directory", "/nowhere/pretrained.pt")


def dies_once_loop(loop_config: dict[str, Any]) -> None:
    """Rank 1's process is killed in the first attempt (a lost worker); the next attempt reports a checkpoint."""
    rank = _record_start()
    died = attempts_file(ray.train.get_context().get_experiment_name()) + ".died"
    if rank == 1 and not os.path.exists(died):
        open(died, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    with tempfile.TemporaryDirectory() as directory:
        with open(os.path.join(directory, "marker"), "w") as handle:
            handle.write("done")
        checkpoint = ray.train.Checkpoint.from_directory(directory) if rank == 0 else None
        ray.train.report({"val_top1": 0.5, "epoch": 0}, checkpoint=checkpoint)
