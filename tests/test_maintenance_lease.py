"""Run leases: how gc knows a run is alive while an epoch writes nothing. ``run_training`` holds one around
``fit()`` (renewed in the background, released whatever happens), and an abandoned one expires."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest

from hvt import storage
from hvt.maintenance.lease import lease_holder, lease_url, live_leases, run_lease

pytestmark = pytest.mark.timeout(120)


def test_a_lease_is_renewed_while_held_released_at_the_end_and_expires_when_abandoned(tmp_path):
    store = str(tmp_path)
    url = lease_url(store, "r1")
    with run_lease(store, "r1", dataset="syn", dataset_version="v-1", heartbeat_s=0.2):
        first = os.stat(url).st_mtime
        time.sleep(0.7)
        assert os.stat(url).st_mtime > first  # renewed
        assert "renewed" in (lease_holder(store, "r1") or "")
        assert live_leases(store)["r1"]["dataset_version"] == "v-1"
    assert not os.path.exists(url) and lease_holder(store, "r1") is None

    storage.write_json(url, {"owner": "killed-driver:1"})  # a driver killed without cleanup leaves its lease
    stamp = time.time() - 1000
    os.utime(url, (stamp, stamp))
    assert lease_holder(store, "r1", ttl_s=900) is None and live_leases(store, ttl_s=900) == {}
    assert lease_holder(store, "r1", ttl_s=3600) is not None


def test_run_training_holds_the_lease_while_it_fits_and_releases_it_when_fit_fails(tmp_path, monkeypatch):
    from hvt.config import TrainConfig
    from hvt.train import preflight, trainer

    store = str(tmp_path)
    cfg = TrainConfig(store=store, dataset_name="syn", run_name="leased-run")
    dataset = SimpleNamespace(name="syn", version="v-1", classes=["a", "b"])
    seen: list[str | None] = []

    class FakeTrainer:
        train_loop_config = {"decode_resource": None}

        def __init__(self, fails: bool) -> None:
            self.fails = fails

        def fit(self):
            seen.append(lease_holder(store, "leased-run"))
            if self.fails:
                raise RuntimeError("the loop broke")
            return SimpleNamespace(get_best_checkpoint=lambda *a: "ckpt", checkpoint="ckpt", metrics={})

    monkeypatch.setattr(trainer, "resolve_dataset", lambda *a: dataset)
    monkeypatch.setattr(trainer, "check_pretrained", lambda *a: None)
    monkeypatch.setattr(trainer, "verify_dataset", lambda *a: {})
    monkeypatch.setattr(trainer, "ensure_ray", lambda *a: None)
    monkeypatch.setattr(preflight, "run_preflight", lambda *a: None)
    for fails in (False, True):
        monkeypatch.setattr(trainer, "build_trainer", lambda *a, fails=fails, **_: (FakeTrainer(fails), "leased-run"))
        if fails:
            with pytest.raises(RuntimeError, match="the loop broke"):
                trainer.run_training(cfg)
        else:
            assert trainer.run_training(cfg).run_name == "leased-run"
        assert lease_holder(store, "leased-run") is None  # released either way
    assert len(seen) == 2 and all(holder and str(os.getpid()) in holder for holder in seen)
