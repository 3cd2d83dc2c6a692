"""Shard writers as Ray tasks: the same bytes as local processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvt.ingest import ShardConfig, shard_dataset
from hvt.ingest.synthetic import make_synthetic_dataset

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture
def local_ray(shared_ray):
    """The test process's local Ray (tests/conftest.py: shared_ray)."""
    import ray

    return ray


def test_ray_tasks_write_the_same_shards(tmp_path: Path, local_ray) -> None:
    ds = make_synthetic_dataset(str(tmp_path / "data"), classes=2, per_class=6, frames=10, size=(64, 48))
    base = dict(annotations=ds.annotations_csv, videos=ds.videos_dir, name="synth", shard_size=3)
    with_ray = shard_dataset(ShardConfig(**base, store=str(tmp_path / "ray"), ray_address="auto", workers=2))
    local = shard_dataset(ShardConfig(**base, store=str(tmp_path / "local")))
    assert local_ray.is_initialized()  # a Ray it did not start is left running
    assert with_ray.version == local.version and with_ray.shards_written == with_ray.shards == 5
    assert with_ray.counts == local.counts and local.counts["sharded"] == 12
    for name in ["manifest.json", "quarantine.jsonl", "train-000000.tar", "val-000000.tar"]:
        assert (Path(with_ray.path) / name).read_bytes() == (Path(local.path) / name).read_bytes(), name
