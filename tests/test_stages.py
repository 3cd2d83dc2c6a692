"""Stages after training: `register_run` stores report + plots per version; champion moves only on a win.

No Ray: a tiny synthetic dataset is sharded locally, an untrained nano model plays the trained one, and its
metrics are computed here from the val clips (as `evaluate_model` would, minus Ray Data).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hvt import registry
from hvt.config import ModelSpec, TrainConfig
from hvt.data import DataConfig
from hvt.evaluation import plots
from hvt.evaluation.evaluate import read_clips
from hvt.ingest import ShardConfig, make_synthetic_dataset, shard_dataset
from hvt.ingest.versions import resolve_dataset
from hvt.model import create_model
from hvt.stages import register_run
from hvt.train.trainer import TrainResult

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA = DataConfig(num_frames=8, frame_interval=2, train_short_side=(32, 40), test_short_side=32, crop_size=32,
                  randaugment=False)
MODEL = "haltingvt-nano-g05-b10"
PLOT_FILES = {plots.TOKENS_PER_LAYER, plots.HALTING_DEPTH, plots.HALTING_MAPS, plots.ACCURACY_VS_GFLOPS}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    made = make_synthetic_dataset(str(root / "videos"), classes=3, per_class=6, seed=3, frames=16, size=(64, 64))
    store = str(root / "store")
    shard_dataset(ShardConfig(annotations=made.annotations_csv, videos=made.videos_dir, store=store, name="synth"))
    return store, resolve_dataset(store, "synth", None)


def _state(seed: int) -> dict:
    torch.manual_seed(seed)
    model = create_model(MODEL, num_classes=3, halt_center=1.0)
    return {"model": model.state_dict(), "model_config": model.config.to_dict(), "epoch": 4}


def _metrics(state: dict, dataset, top1: float) -> dict:
    """What `evaluate_run` reports, computed without Ray from every val clip."""
    model = create_model(MODEL, num_classes=3, halt_center=1.0).eval()
    model.load_state_dict(state["model"])
    clips = read_clips(dataset.path, "val", DATA, count=100)
    batch = torch.from_numpy(np.stack([c for _, _, c in clips]))
    with torch.no_grad():
        out = model(batch.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0)
    depths = out.halting_depth.flatten().long()
    return {
        "val_top1": top1,
        "val_top5": 1.0,
        "num_classes": 3,
        "epoch": 4,
        "eval_split": "val",
        "eval_set": f"synth/{dataset.version}/val",
        "eval_manifest_sha256": dataset.manifest_sha256,
        "gflops_mean": float(out.gflops.mean()),
        "clips": len(clips),
        "per_class_top1": [top1] * 3,
        "tokens_per_layer": out.tokens_per_layer.float().mean(0).tolist(),
        "halting_depth_histogram": torch.bincount(depths[depths > 0], minlength=5).tolist(),
    }


def _register(store: str, dataset, seed: int, top1: float):
    cfg = TrainConfig(store=store, dataset_name="synth", model=ModelSpec(name=MODEL), data=DATA,
                      registry_name="tiny")
    result = TrainResult(f"run-{seed}", f"{store}/runs/run-{seed}", None, {}, dataset)
    state = _state(seed)
    metrics = _metrics(state, dataset, top1)
    return register_run(result, cfg, metrics, state), metrics


@pytest.fixture(scope="module")
def first(dataset):
    store, ref = dataset
    return _register(store, ref, seed=1, top1=0.5)


def test_version_holds_verified_pngs_embedded_in_the_report(first):
    registered, _ = first
    version = registered.version
    assert registered.promoted and version.version == "v1"
    assert PLOT_FILES <= set(version.files)  # each sha256-recorded in version.json
    report = registry.read_verified(version, "report.md").decode()
    for name in PLOT_FILES:
        png = registry.read_verified(version, name)
        assert png.startswith(PNG_SIGNATURE)
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        assert width > 200 and height > 200
        title, _ = plots.read_plot_data(png)
        assert f"![{title}]({name})" in report
        assert (Path(version.path) / name).parent == (Path(version.path) / "report.md").parent


def test_plot_data_matches_the_stored_metrics(first):
    registered, metrics = first
    version = registered.version
    stored = registry.read_verified(version, "metrics.json")
    import json

    stored = json.loads(stored)
    title, tokens = plots.read_plot_data(registry.read_verified(version, plots.TOKENS_PER_LAYER))
    assert "Tokens kept per block" in title
    assert tokens["tokens_per_layer"] == pytest.approx(stored["tokens_per_layer"])
    assert tokens["glimpser_depth"] == 2 and tokens["tokens_in"] == 1 + 8 * 16
    title, hist = plots.read_plot_data(registry.read_verified(version, plots.HALTING_DEPTH))
    assert "Halting depth" in title
    assert hist["counts"] == stored["halting_depth_histogram"][1:]
    assert sum(hist["shares"]) == pytest.approx(1.0)
    title, maps = plots.read_plot_data(registry.read_verified(version, plots.HALTING_MAPS))
    assert "Halting maps" in title and "Glimpser" in title
    assert len(maps["clips"]) == 3 and maps["frames"] == 8
    for clip in maps["clips"]:
        depth = np.array(clip["depth"])  # [T, Hp, Wp]
        assert depth.shape == (8, 4, 4)
        halted = depth[depth > 0]
        assert ((halted > 2) & (halted <= 4)).all()  # only the halting blocks 3..4
        assert clip["dropped_share"] == pytest.approx(0.5)  # keep rate 0.5: half of every frame dropped
    title, acc = plots.read_plot_data(registry.read_verified(version, plots.ACCURACY_VS_GFLOPS))
    assert "GFLOPs" in title and metrics["eval_set"] in title
    [point] = acc["points"]
    assert point["top1"] == metrics["val_top1"] and point["gflops"] == pytest.approx(metrics["gflops_mean"])
    assert acc["no_halting_gflops"] < acc["dense_gflops"]
    assert metrics["gflops_mean"] <= acc["no_halting_gflops"] + 1e-9


def test_worse_version_is_not_promoted_and_joins_the_plot(dataset, first):
    store, ref = dataset
    registered, _ = _register(store, ref, seed=2, top1=0.25)
    assert not registered.promoted and "does not beat" in registered.promotion_reason
    assert registry.get_alias(store, "tiny") == "v1"
    _, acc = plots.read_plot_data(registry.read_verified(registered.version, plots.ACCURACY_VS_GFLOPS))
    labels = [p["label"] for p in acc["points"]]
    assert labels == ["tiny v1", "tiny (this version)"]


def _hvt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hvt.cli", *args], capture_output=True, text=True, timeout=120)


def test_promote_refuses_a_version_that_does_not_beat_champion(dataset, first):
    store, ref = dataset
    if len(registry.list_versions(store, "tiny")) < 2:
        _register(store, ref, seed=2, top1=0.25)
    with pytest.raises(registry.RegistryError, match="does not beat"):
        registry.promote(store, "tiny", "v2")
    refused = _hvt("registry", "promote", "tiny", "v2", "--store", store)
    assert refused.returncode == 2 and "--force" in refused.stderr and "Traceback" not in refused.stderr
    assert registry.get_alias(store, "tiny") == "v1"
    forced = _hvt("registry", "promote", "tiny", "v2", "--store", store, "--force")
    assert forced.returncode == 0, forced.stderr
    assert registry.get_alias(store, "tiny") == "v2"
    # v1 beats v2 on the same set, so moving back needs no force
    assert "val_top1 0.5000 >" in registry.promote(store, "tiny", "v1")
    assert registry.get_alias(store, "tiny") == "v1"


def test_registering_the_same_run_checkpoint_again_returns_its_version(dataset, first):
    """A re-run of a finished run evaluates the same checkpoint again; it must not become a second version."""
    store, ref = dataset
    before = [v.version for v in registry.list_versions(store, "tiny")]
    champion = registry.get_alias(store, "tiny")
    again, _ = _register(store, ref, seed=1, top1=0.5)  # run-1, epoch 4: what `first` registered
    assert not again.created and not again.promoted
    assert again.version.version == "v1" and "already registered as v1" in again.promotion_reason
    assert [v.version for v in registry.list_versions(store, "tiny")] == before
    assert registry.get_alias(store, "tiny") == champion
    assert first[0].created


def test_damaged_champion_alias_keeps_the_new_version_and_does_not_promote(dataset, first):
    """A champion alias file left damaged (e.g. by hand) must not cost the run its registration."""
    store, ref = dataset
    alias = Path(store) / "registry" / "tiny" / "aliases" / "champion.json"
    saved = alias.read_bytes()
    alias.write_bytes(b"")
    try:
        registered, _ = _register(store, ref, seed=9, top1=0.9)
        assert registered.created and not registered.promoted
        assert "not promoted" in registered.promotion_reason and "damaged alias" in registered.promotion_reason
        assert registry.verify_version(registered.version) == []
    finally:
        alias.write_bytes(saved)


@pytest.mark.parametrize(
    ("scaling", "alive_nodes", "workers"),
    [
        ({"num_workers": 2}, 1, 1),  # CPU, one node: in this process
        ({"num_workers": 2, "min_workers": 1}, 1, 1),  # elastic CPU run, one node: in this process too
        ({"num_workers": 2}, 2, 2),  # CPU on a cluster: on the workers
        ({"num_workers": 2, "use_gpu": True}, 1, 2),  # GPU: on the workers
        ({"num_workers": 1}, 1, 1),
    ],
)
def test_evaluation_runs_where_it_gains_something(monkeypatch, scaling, alive_nodes, workers):
    import ray

    from hvt.config import ScalingSpec
    from hvt.stages import evaluation_scaling

    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}] * alive_nodes + [{"Alive": False}])
    spec = ScalingSpec(**scaling)
    chosen = evaluation_scaling(spec)
    assert chosen.num_workers == workers
    assert chosen.use_gpu == spec.use_gpu and spec.num_workers == scaling["num_workers"]  # the run's own is kept
