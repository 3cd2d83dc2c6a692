"""The store's promises on a real S3 server (SeaweedFS `weed mini`): concurrent registrations get distinct
versions, a registration killed after its claim is repaired, and an outage mid-`hvt shard` is one clear error
then an exact resume."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from s3server import restartable_seaweedfs
from store_faults_helpers import env, register_at_once, register_one, writer_bytes

from hvt import registry, storage
from hvt.ingest import make_synthetic_dataset
from hvt.store_check import check_store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
MODEL = "m"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with restartable_seaweedfs(tmp_path_factory.mktemp("weed")) as running:
        yield running


def _fresh(fs_url: str) -> None:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


def test_concurrent_registrations_on_s3_get_distinct_versions_that_verify(server):
    store = f"s3://{server.bucket}/concurrent"
    n = 4
    results = register_at_once(store, MODEL, n)
    assert sorted(r["version"] for r in results) == sorted(f"v{i}" for i in range(1, n + 1))
    _fresh(store)
    for r in results:
        version = registry.get_version(store, MODEL, r["version"])
        assert registry.read_verified(version, "model.pt") == writer_bytes(r["writer"])
    assert check_store(store).findings == []  # healthy as written: no leftover, not even a probe object


def test_registration_killed_after_its_claim_is_repaired_on_s3(server):
    store = f"s3://{server.bucket}/killed"
    assert register_one(store, MODEL, 1).returncode == 0
    killed = register_one(store, MODEL, 2, HVT_FAULT_KILL_AT="register:files")
    assert killed.returncode == 137
    _fresh(store)
    assert [v.version for v in registry.list_versions(store, MODEL)] == ["v1"]
    report = check_store(store)
    assert [f.kind for f in report.findings if f.kind != "leftover"] == ["unfinished"]
    assert check_store(store, repair=True, grace_s=0).healthy
    _fresh(store)
    assert check_store(store).findings == []  # what --repair removed stays removed
    assert register_one(store, MODEL, 3).returncode == 0
    _fresh(store)
    assert [v.version for v in registry.list_versions(store, MODEL)] == ["v1", "v2"]
    assert registry.read_verified(registry.get_version(store, MODEL, "v2"), "model.pt") == writer_bytes(3)


def test_outage_mid_shard_is_one_clear_error_then_exact_resume(server, tmp_path):
    made = make_synthetic_dataset(str(tmp_path / "videos"), classes=3, per_class=3, frames=16, size=(64, 64), seed=4)
    store = f"s3://{server.bucket}/outage"
    args = [sys.executable, "-m", "hvt.cli", "shard", "--annotations", made.annotations_csv, "--videos",
            made.videos_dir, "--class-list", made.classes_txt, "--name", "syn", "--shard-size", "2", "--quiet"]
    local = subprocess.run(args + ["--store", str(tmp_path / "local"), "--json"], capture_output=True, text=True,
                           timeout=300, env=env())
    reference = json.loads(local.stdout)  # the same command, undisturbed, on a local store
    assert reference["counts"]["sharded"] == 9
    args += ["--store", store]
    paused = tmp_path / "paused"
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env(HVT_FAULT_PAUSE_AT="shard:stats#2", HVT_FAULT_PAUSE_S="5",
                                    HVT_FAULT_PAUSE_FLAG=str(paused)))
    deadline = time.monotonic() + 120
    while not paused.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert paused.exists(), "the run never reached its second shard"
    server.stop()  # the store goes away in the middle of the run, after two shards
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 2, err[-3000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("hvt shard: ") and "unavailable" in last and "re-run" in last, err[-2000:]
    server.start()
    _fresh(store)
    rerun = subprocess.run(args + ["--json"], capture_output=True, text=True, timeout=300, env=env())  # same command
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed = json.loads(rerun.stdout)
    assert resumed["version"] == reference["version"] and resumed["shards_skipped"] == 2
    manifest = storage.read_bytes(resumed["manifest_url"])
    assert json.loads(manifest)["splits"] == json.loads(open(reference["manifest_url"]).read())["splits"]
    assert check_store(store, repair=True, grace_s=0).healthy


def test_failed_streamed_write_leaves_no_object_on_s3(server):
    url = f"s3://{server.bucket}/partial/shard.tar"
    with pytest.raises(RuntimeError, match="source went away"):
        with storage.atomic_open(url, "wb") as handle:
            handle.write(b"x" * (6 << 20))  # past the first multipart part
            raise RuntimeError("source went away")
    _fresh(url)
    assert not storage.exists(url)
