"""Warm start from a registered version (``--init-from MODEL[@REF]``): the alias is pinned to a version before the
run is named, the weights the workers load are the version's own (sha256-verified), bad references are one line."""

from __future__ import annotations

import io

import pytest
import torch

from hvt import registry
from hvt.config import ModelSpec, TrainConfig
from hvt.model import create_model
from hvt.train.warm_start import (
    WarmStartError,
    init_lineage,
    init_weights,
    parse_init_from,
    resolve_init_from,
)

MODEL = "haltingvt-nano-g05-b10"


def _register(store: str, seed: int) -> registry.RegistryVersion:
    torch.manual_seed(seed)
    model = create_model(MODEL, num_classes=3, num_frames=8, img_size=32)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "model_config": model.config.to_dict(), "classes": ["a", "b", "c"]},
               buffer)
    return registry.register_version(store, "m", files={"model.pt": buffer.getvalue()}, metrics={"val_top1": 0.5},
                                     lineage={}, created_at="2026-12-06T00:00:00+00:00")


def _config(store: str, init_from: str | None) -> TrainConfig:
    from hvt.data import DataConfig

    data = DataConfig(num_frames=8, train_short_side=(32, 40), test_short_side=32, crop_size=32)
    return TrainConfig(store=store, model=ModelSpec(name=MODEL, init_from=init_from), data=data)


def test_the_alias_is_pinned_before_the_run_is_named(tmp_path):
    store = str(tmp_path)
    _register(store, seed=1)
    v2 = _register(store, seed=2)
    registry.set_alias(store, "m", "v1")
    pinned = resolve_init_from(_config(store, "m@champion"))
    assert pinned.model.init_from == "m@v1"
    assert resolve_init_from(_config(store, "m")).model.init_from == "m@v1"  # REF defaults to champion
    assert resolve_init_from(_config(store, "m@latest")).model.init_from == "m@v2"
    registry.set_alias(store, "m", "v2")  # the champion moves: a new resolution names another run
    moved = resolve_init_from(_config(store, "m@champion"))
    assert moved.model.init_from == "m@v2" and moved.fingerprint() != pinned.fingerprint()
    assert init_lineage(moved) == {"model": "m", "version": "v2", "model_sha256": v2.files["model.pt"]}
    weights = init_weights(moved)
    assert torch.equal(weights["pos_embed"], registry.load_checkpoint(v2)["model"]["pos_embed"])


def test_without_init_from_run_names_do_not_change(tmp_path):
    from pipelines.demo import demo_config

    cfg = _config(str(tmp_path), None)
    assert resolve_init_from(cfg) is cfg
    # the demo's run name as the code named it before init_from (and the placement fields) existed (088ddb8):
    # a store made then still resumes its run
    assert demo_config(str(tmp_path)).fingerprint() == "4b22f91655"


def test_bad_references_are_one_line(tmp_path):
    store = str(tmp_path)
    with pytest.raises(WarmStartError, match="expected MODEL"):
        parse_init_from("m@v1@v2")
    with pytest.raises(WarmStartError, match="--init-from nope@champion"):
        resolve_init_from(_config(store, "nope@champion"))
    version = _register(store, seed=1)
    (tmp_path / "registry" / "m" / version.version / "model.pt").write_bytes(b"tampered")
    with pytest.raises(WarmStartError, match="damaged"):
        resolve_init_from(_config(store, "m@v1"))
    with pytest.raises(ValueError, match="choose one"):
        TrainConfig(store=store, model=ModelSpec(name=MODEL, init_from="m", pretrained="/x.pth"))
