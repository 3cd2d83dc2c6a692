"""`bench/capacity.py` (the capacity plan of docs/CLUSTER.md) computes what its formulas say from its inputs."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def capacity():
    spec = importlib.util.spec_from_file_location("capacity", REPO / "bench" / "capacity.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["capacity"] = module  # dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


def test_plan_follows_the_formulas_and_labels_every_input(capacity, capsys):
    assert capacity.main(["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    inputs = out["inputs"]
    for figure in [inputs["decode_rate"], *inputs["mfu_band"], *inputs["datasets"].values(),
                   *(i["price_per_hour"] for i in inputs["instances"].values())]:
        assert figure["source"].startswith(("measured:", "assumption:")), figure
    g05 = inputs["gflops"]["haltingvt-s-g05-b20"]["value"]
    assert g05 == pytest.approx(26.530424064)  # what `hvt flops haltingvt-s-g05-b20` prints
    (row,) = [r for r in out["plans"] if r["dataset"] == "kinetics-700" and "H100" in r["gpu_node"]
              and r["mfu"] == 0.30]
    rate = 0.30 * 989e12 / (6 * g05 * 1e9 * inputs["static_factor"]["value"])
    assert row["clips_per_s_per_gpu"] == pytest.approx(rate)
    assert row["decode_cores_per_gpu"] == pytest.approx(rate / inputs["decode_rate"]["value"])
    network = math.ceil(8 * rate * inputs["clip_bytes"]["value"] / (12.5e9 / 8))
    assert row["decode_nodes"] == max(math.ceil(8 * rate / inputs["decode_rate"]["value"] / 32), network)
    assert row["hours_per_epoch"] == pytest.approx(650_000 / (8 * rate) / 3600)
    assert row["cost_per_schedule"] == pytest.approx(
        row["hours_per_epoch"] * inputs["epochs"]["value"] * row["cluster_price_per_hour"])
