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
    made = make_synthetic_dataset(str(root / "videos"), classes=2, per_class=3, seed=3, frames=8, size=(48, 48))
    shard_dataset(ShardConfig(annotations=made.annotations_csv, videos=made.videos_dir, store=str(root / "store"),
                              name="synth"))
    return str(root / "store")


@pytest.fixture
def local_ray():
    import ray

    from hvt.train.ray_env import ensure_ray

    ensure_ray(None)
    yield
    ray.shutdown()


def _run(store: str, loop, attempts: Path, monkeypatch, run_name: str):
    from hvt.train import trainer

    monkeypatch.setenv("HVT_TEST_ATTEMPTS", str(attempts))
    monkeypatch.setattr(trainer, "train_loop_per_worker", loop)
    cfg = TrainConfig(store=store, dataset_name="synth", run_name=run_name, model=ModelSpec(name="haltingvt-nano-g05-b10"),
                      data=DataConfig(num_frames=4, frame_interval=1, train_short_side=(32, 32), test_short_side=32,
                                      crop_size=32),
                      scaling=ScalingSpec(num_workers=2, cpus_per_worker=0.5, max_failures=2))
    return trainer.run_training(cfg)


def _attempts(path: Path) -> int:
    return path.read_text().splitlines().count("rank 0") if path.exists() else 0


@pytest.mark.timeout(300)
def test_a_data_error_in_a_worker_fails_once_with_one_line(store, local_ray, tmp_path, monkeypatch, caplog):
    from hvt.train.trainer import TrainingError

    attempts = tmp_path / "attempts"
    with pytest.raises(TrainingError) as caught:
        _run(store, train_fault_loops.missing_file_loop, attempts, monkeypatch, "missing")
    assert _attempts(attempts) == 1, attempts.read_text()  # max_failures=2 would have made it 3
    message = str(caught.value)
    assert "\n" not in message
    assert "not retried: rank" in message and "FileNotFoundError" in message and "/nowhere/pretrained.pt" in message
    assert "resuming from its newest checkpoint" not in caplog.text


@pytest.mark.timeout(300)
def test_a_lost_worker_is_retried_and_the_run_finishes(store, local_ray, tmp_path, monkeypatch, caplog):
    attempts = tmp_path / "attempts"
    result = _run(store, train_fault_loops.dies_once_loop, attempts, monkeypatch, "dies-once")
    assert _attempts(attempts) == 2, attempts.read_text()
    assert os.path.exists(str(attempts) + ".died")
    assert "a worker or node was lost" in caplog.text and "retry 1 of 2" in caplog.text
    with result.checkpoint.as_directory() as directory:
        assert Path(directory, "marker").read_text() == "done"
