"""`hvt train --skip-bad-shards --json` on a dataset with a truncated train shard: the run trains on the shards
that verify, and the shard left out appears in the JSON summary, the registry metrics and the report; stdout is
the JSON document only (Ray's output goes to stderr)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hvt import registry
from hvt.config import ModelSpec, OptimConfig, ScalingSpec, TrainConfig
from hvt.data import DataConfig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_skipped_shard_is_in_summary_metrics_and_report(tmp_path):
    from hvt.ingest import ShardConfig, make_synthetic_dataset, shard_dataset

    made = make_synthetic_dataset(str(tmp_path / "videos"), classes=3, per_class=6, seed=5, frames=16, size=(64, 64))
    store = str(tmp_path / "store")
    result = shard_dataset(ShardConfig(annotations=made.annotations_csv, videos=made.videos_dir, store=store,
                                       name="synth", shard_size=4))
    manifest = json.loads(Path(result.manifest_url).read_text())
    shard = manifest["splits"]["train"]["shards"][0]
    path = Path(result.path) / shard["path"]
    path.write_bytes(path.read_bytes()[: shard["bytes"] // 2])  # truncated
    cfg = TrainConfig(
        store=store, dataset_name="synth", model=ModelSpec(name="haltingvt-nano-g05-b10"), registry_name="tiny",
        data=DataConfig(num_frames=8, frame_interval=2, train_short_side=(32, 40), test_short_side=32, crop_size=32,
                        randaugment=False, static_clips=False, decode_cpus=0.5),
        optim=OptimConfig(epochs=1, warmup_epochs=0, batch_size=4),
        scaling=ScalingSpec(num_workers=1, cpus_per_worker=0.5),
    )
    config = tmp_path / "train.json"
    config.write_text(cfg.model_dump_json())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "hvt.cli", "train", "--config", str(config), "--json"]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert refused.returncode == 2 and refused.stdout == "" and shard["path"] in refused.stderr
    proc = subprocess.run(command + ["--skip-bad-shards"], capture_output=True, text=True, timeout=800, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)  # the whole of stdout is one JSON document
    expected = [f"train/{shard['path']}"]
    assert [s.split(":")[0] for s in summary["metrics"]["skipped_shards"]] == expected
    assert summary["metrics"]["skipped_samples"] == shard["samples"]
    assert summary["data"]["train"]["samples"] == manifest["splits"]["train"]["samples"] - shard["samples"]
    version = registry.get_version(store, "tiny", summary["registry"]["version"])
    assert [s.split(":")[0] for s in version.metrics["skipped_shards"]] == expected
    assert "train_decode_failures" in version.metrics
    report = registry.read_verified(version, "report.md").decode()
    assert "damaged shards left out" in report and shard["path"] in report
