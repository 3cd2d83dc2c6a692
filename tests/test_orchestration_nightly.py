"""The nightly decision: retrain only on a dataset version that no registered model was trained on."""

from __future__ import annotations

import json
from pathlib import Path

from hvt import registry
from hvt.config import TrainConfig
from pipelines.nightly import retrain_decision

MODEL = TrainConfig().model.name  # the default model, which the configs below train


def _dataset_version(store: Path, name: str, version: str, created_at: str) -> None:
    path = store / "datasets" / name / version
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({"counts": {"sharded": 4}, "classes": ["a", "b"]}))
    (path / "version.json").write_text(json.dumps({"created_at": created_at}))


def _registered(store: Path, dataset: str, version: str) -> str:
    v = registry.register_version(
        str(store), MODEL, files={"model.pt": b"weights"}, metrics={"val_top1": 0.5},
        lineage={"dataset": dataset, "dataset_version": version}, created_at="2026-11-01T00:00:00+00:00",
    )
    return v.version


def test_no_dataset_yet_is_a_clean_skip(tmp_path):
    decision = retrain_decision(TrainConfig(store=str(tmp_path), dataset_name="kinetics"))
    assert not decision.retrain and "no dataset 'kinetics'" in decision.reason


def test_retrains_when_the_newest_version_has_no_model_and_skips_once_it_has(tmp_path):
    config = TrainConfig(store=str(tmp_path), dataset_name="kinetics")
    _dataset_version(tmp_path, "kinetics", "d1", "2026-11-01T00:00:00+00:00")
    assert retrain_decision(config).retrain  # no model at all yet

    _registered(tmp_path, "kinetics", "d1")
    registry.set_alias(str(tmp_path), MODEL, "v1")
    skip = retrain_decision(config)
    assert not skip.retrain and skip.dataset_version == "d1"
    assert "no newer dataset" in skip.reason and "v1" in skip.reason and "champion: v1" in skip.reason

    _dataset_version(tmp_path, "kinetics", "d2", "2026-11-02T00:00:00+00:00")  # new data arrived
    again = retrain_decision(config)
    assert again.retrain and again.dataset_version == "d2"


def test_a_model_trained_on_another_dataset_does_not_count(tmp_path):
    _dataset_version(tmp_path, "kinetics", "d1", "2026-11-01T00:00:00+00:00")
    _registered(tmp_path, "other-set", "d1")
    assert retrain_decision(TrainConfig(store=str(tmp_path), dataset_name="kinetics")).retrain
