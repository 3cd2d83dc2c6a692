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
def flow_run(tmp_path_factory, shared_ray):
    """The demo flow on the test process's local Ray (tests/conftest.py: shared_ray), as `make demo` runs it."""
    from pipelines.demo import demo_config
    from pipelines.params import SyntheticSource
    from pipelines.train import train_haltingvt

    store = str(tmp_path_factory.mktemp("store"))
    config = demo_config(store, epochs=1)
    source = SyntheticSource(classes=CLASSES, per_class=PER_CLASS, seed=1, frames=16, width=64, height=64)
    summary = train_haltingvt(config=config, synthetic=source)
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
    # the decision with its figures is in the metadata and in report.md, which the flow publishes as its artifact
    decision = version.metrics["promotion"]
    assert decision["promoted"] and decision["champion"] is None and summary["registry"]["promotion"] == decision
    assert f"val_top1 {version.metrics['val_top1']:.4f} on {version.metrics['eval_set']}" in decision["reason"]
    assert decision["reason"] in registry.read_verified(version, "report.md").decode()
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


def test_demo_starts_prefects_temporary_api_ahead_of_the_flow(tmp_path):
    """``make demo`` starts Prefect's temporary API server in a thread while the pipeline imports; once the thread
    is joined the server answers /health, which is the server the flow then uses. With a Prefect API configured
    there is nothing to start. (A subprocess each: the server is a per-process singleton, stopped at exit.)"""
    import os

    code = ("from pipelines.demo import start_prefect_api; import httpx; t = start_prefect_api(); "
            "t.join(); from prefect.server.api.server import SubprocessASGIServer as S; "
            "print(httpx.get(S().api_url + '/health').status_code)")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "200", out.stderr[-2000:]

    code = "from pipelines.demo import start_prefect_api; print(start_prefect_api())"
    env["PREFECT_API_URL"] = "http://127.0.0.1:9/api"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "None", out.stderr[-2000:]
