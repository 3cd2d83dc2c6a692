"""The main job end to end on the embedded default: in-process Prefect, local Ray, local folder store.

One tiny run (few synthetic clips, 1 epoch) shared by the assertions below.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from hvt import registry
from hvt.ingest.versions import resolve_dataset
from hvt.model.zoo import model_from_state

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

CLASSES, PER_CLASS = 3, 6


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory):
    import ray

    from pipelines.demo import demo_config
    from pipelines.params import SyntheticSource
    from pipelines.train import train_haltingvt

    store = str(tmp_path_factory.mktemp("store"))
    config = demo_config(store, epochs=1)
    source = SyntheticSource(classes=CLASSES, per_class=PER_CLASS, seed=1, frames=16, width=64, height=64)
    try:
        summary = train_haltingvt(config=config, synthetic=source)
    finally:
        ray.shutdown()
    return store, summary


def test_clips_in_equal_clips_sharded(flow_run):
    _, summary = flow_run
    counts = summary["dataset"]["counts"]
    assert counts["input"] == CLASSES * PER_CLASS
    assert counts["sharded"] == CLASSES * PER_CLASS
    assert counts["quarantined"] == 0


def test_registry_version_has_metrics_and_its_checkpoint_loads(flow_run):
    store, summary = flow_run
    versions = registry.list_versions(store)
    assert [v.version for v in versions] == ["v1"]
    version = versions[0]
    assert 0.0 <= version.metrics["val_top1"] <= 1.0
    assert version.metrics["num_classes"] == CLASSES
    # every val clip evaluated exactly once; a CPU run on a one-node Ray evaluates in the flow's own process
    # (stages.evaluation_scaling), not on a second group of 2 workers
    val_clips = resolve_dataset(store, summary["dataset"]["name"], None).split_samples("val")
    assert version.metrics["clips"] == val_clips > 0
    assert version.metrics["eval_workers"] == 1
    assert version.metrics["gflops_p50"] <= version.metrics["gflops_p90"] <= version.metrics["gflops_max"]
    assert summary["registry"]["champion"] == "v1"
    payload = registry.load_checkpoint(version)
    model = model_from_state(payload)
    cfg = model.config
    x = torch.zeros(1, 3, cfg.num_frames, cfg.img_size, cfg.img_size)
    with torch.no_grad():
        out = model(x)
    assert out.logits.shape == (1, CLASSES)
    assert payload["classes"] and len(payload["classes"]) == CLASSES


def test_registry_list_json_cli(flow_run):
    store, _ = flow_run
    proc = subprocess.run(
        [sys.executable, "-m", "hvt.cli", "registry", "list", "--store", store, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["versions"]
    assert rows[0]["version"] == "v1"
    assert set(rows[0]) >= {"val_top1", "val_top5", "num_classes", "path", "checkpoint"}
    assert rows[0]["num_classes"] == CLASSES
