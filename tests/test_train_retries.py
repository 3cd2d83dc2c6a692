"""Which failures `run_training` retries, with real Ray Train workers: a worker's data or configuration error
fails the run once (one attempt, one line naming the rank and the error), a lost worker is retried and the run
finishes. The loops are stand-ins (tests/train_fault_loops.py) so that each case fails exactly where it should."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import train_fault_loops

from hvt.config import ModelSpec, ScalingSpec, TrainConfig
from hvt.data import DataConfig

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    from hvt.ingest import ShardConfig, make_synthetic_dataset, shard_dataset

    root = tmp_path_factory.mktemp("retries")
    made = make_synthetic_dataset(str(root / "videos"), classes=3, per_class=6, seed=3, frames=16, size=(64, 64))
    shard_dataset(ShardConfig(annotations=made.annotations_csv, videos=made.videos_dir, store=str(root / "store"),
                              name="synth"))
    return str(root / "store")


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """A local Ray whose workers inherit $HVT_TEST_ATTEMPTS_DIR (set before it starts)."""
    import ray

    from hvt.train.ray_env import ensure_ray

    ray.shutdown()  # a Ray another module left running (tests/conftest.py: shared_ray) has not got the variable
    os.environ["HVT_TEST_ATTEMPTS_DIR"] = str(tmp_path_factory.mktemp("attempts"))
    ensure_ray(None)
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(train_fault_loops)  # the workers cannot import a test module
    yield
    ray.shutdown()
    os.environ.pop("HVT_TEST_ATTEMPTS_DIR", None)


def _run(store: str, loop, monkeypatch, run_name: str):
    from hvt.train import trainer

    monkeypatch.setattr(trainer, "train_loop_per_worker", loop)
    cfg = TrainConfig(store=store, dataset_name="synth", run_name=run_name, model=ModelSpec(name="haltingvt-nano-g05-b10"),
                      data=DataConfig(num_frames=4, frame_interval=1, train_short_side=(32, 32), test_short_side=32,
                                      crop_size=32),
                      scaling=ScalingSpec(num_workers=2, cpus_per_worker=0.5, max_failures=2))
    return trainer.run_training(cfg)


def _attempts(path: Path) -> int:
    return path.read_text().splitlines().count("rank 0") if path.exists() else 0


@pytest.mark.timeout(300)
def test_a_data_error_in_a_worker_fails_once_with_one_line(store, local_ray, monkeypatch, caplog):
    from hvt.train.trainer import TrainingError

    attempts = Path(train_fault_loops.attempts_file("missing"))
    with pytest.raises(TrainingError) as caught:
        _run(store, train_fault_loops.missing_file_loop, monkeypatch, "missing")
    assert _attempts(attempts) == 1, caught.value  # max_failures=2 would have made it 3
    message = str(caught.value)
    assert "\n" not in message
    assert "not retried: rank" in message and "FileNotFoundError" in message and "/nowhere/pretrained.pt" in message
    assert "resuming from its newest checkpoint" not in caplog.text


@pytest.mark.timeout(300)
def test_a_lost_worker_is_retried_and_the_run_finishes(store, local_ray, monkeypatch, caplog):
    attempts = Path(train_fault_loops.attempts_file("dies-once"))
    result = _run(store, train_fault_loops.dies_once_loop, monkeypatch, "dies-once")
    assert _attempts(attempts) == 2, attempts.read_text()
    assert os.path.exists(str(attempts) + ".died")
    assert "a worker or node was lost" in caplog.text and "retry 1 of 2" in caplog.text
    with result.checkpoint.as_directory() as directory:
        assert Path(directory, "marker").read_text() == "done"


def test_a_local_ray_registers_the_machines_cores(local_ray):
    """ensure_ray's local Ray: as many logical CPUs as the cores this process may run on (was twice as many)."""
    import ray

    assert ray.cluster_resources()["CPU"] == len(os.sched_getaffinity(0))
