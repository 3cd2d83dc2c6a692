"""The store keeps its promises under concurrency and faults, on a local store (SeaweedFS: test_store_faults_s3.py).

Races and kills happen in real child processes; a kill is ``os._exit(137)`` at a named fault point (no cleanup
runs, as with SIGKILL). After each fault: nothing committed is lost, readers do not crash, and `hvt store check`
calls the store healthy after `--repair`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from store_faults_helpers import hvt, register_at_once, register_one, writer_bytes

from hvt import registry
from hvt.ingest import ShardConfig, make_synthetic_dataset, shard_dataset
from hvt.integrity import DataIntegrityError, check_splits
from hvt.store_check import check_store

MODEL = "m"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults-synth")
    return make_synthetic_dataset(str(root), classes=3, per_class=4, frames=16, size=(64, 64), seed=2)


def _shard(synthetic, store: Path):
    return shard_dataset(ShardConfig(annotations=synthetic.annotations_csv, videos=synthetic.videos_dir,
                                     store=str(store), name="syn", class_list=synthetic.classes_txt, shard_size=3))


def _shard_args(synthetic, store: Path) -> list[str]:
    return ["shard", "--annotations", synthetic.annotations_csv, "--videos", synthetic.videos_dir, "--class-list",
            synthetic.classes_txt, "--store", str(store), "--name", "syn", "--shard-size", "3", "--quiet"]


@pytest.fixture(scope="module")
def reference(synthetic, tmp_path_factory):
    """The dataset as an undisturbed run writes it: the manifest every faulted run must end with."""
    store = tmp_path_factory.mktemp("faults-ref")
    return store, _shard(synthetic, store)


def _healthy_after_repair(store: Path, *, cli: bool = False) -> None:
    if cli:  # the command's exit codes and JSON
        proc = hvt("store", "check", "--store", str(store), "--repair", "--grace", "0")
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.returncode == 0, proc.stdout + proc.stderr
        again = hvt("store", "check", "--store", str(store), "--json")
        report = json.loads(again.stdout)
        assert again.returncode == 0 and report["healthy"] and report["findings"] == [], again.stdout
        return
    repaired = check_store(str(store), repair=True, grace_s=0)
    assert repaired.healthy, repaired.as_dict()
    assert check_store(str(store)).findings == []


# ---------------------------------------------------------------- registry


def test_concurrent_registrations_get_distinct_versions_that_verify(tmp_path):
    n = 6
    results = register_at_once(str(tmp_path), MODEL, n)
    told = sorted(r["version"] for r in results)
    assert told == sorted(f"v{i}" for i in range(1, n + 1)), told  # distinct, none skipped
    for r in results:
        version = registry.get_version(str(tmp_path), MODEL, r["version"])
        assert registry.verify_version(version) == []
        assert registry.read_verified(version, "model.pt") == writer_bytes(r["writer"])  # its own bytes
    assert check_store(str(tmp_path)).healthy


@pytest.mark.parametrize("point", ["write#1", "write#3", "register:staged"])
def test_killed_registration_leaves_no_version_and_no_gap(tmp_path, point):
    store = str(tmp_path)
    assert register_one(store, MODEL, 1).returncode == 0
    killed = register_one(store, MODEL, 2, HVT_FAULT_KILL_AT=point)
    assert killed.returncode == 137
    assert [v.version for v in registry.list_versions(store, MODEL)] == ["v1"]  # committed one intact
    report = check_store(store)
    assert not report.healthy and {f.kind for f in report.findings} == {"leftover"}
    _healthy_after_repair(tmp_path, cli=point == "register:staged")
    assert register_one(store, MODEL, 3).returncode == 0
    assert [v.version for v in registry.list_versions(store, MODEL)] == ["v1", "v2"]  # no number skipped
    assert registry.read_verified(registry.get_version(store, MODEL, "v1"), "model.pt") == writer_bytes(1)


def test_leftovers_of_old_writers_are_reported_not_crashed_on(tmp_path):
    """What the earlier registry left when killed: an empty version.json and a big model.pt.tmp-*."""
    store = str(tmp_path)
    assert register_one(store, MODEL, 1).returncode == 0
    registry.set_alias(store, MODEL, "v1")
    broken = tmp_path / "registry" / MODEL / "v2"
    broken.mkdir()
    (broken / "version.json").write_bytes(b"")
    (broken / "model.pt.tmp-0badf00d").write_bytes(b"x" * 1000)
    listing = hvt("registry", "list", "--store", store, "--json")
    assert listing.returncode == 0 and "Traceback" not in listing.stderr
    assert [row["version"] for row in json.loads(listing.stdout)["versions"]] == ["v1"]
    assert "v2" in listing.stderr and "hvt store check --repair" in listing.stderr
    assert registry.get_version(store, MODEL, "latest").version == "v1"
    with pytest.raises(registry.RegistryError, match="damaged registry record"):
        registry.get_version(store, MODEL, "v2")
    _healthy_after_repair(tmp_path)
    assert register_one(store, MODEL, 2).returncode == 0
    assert [v.version for v in registry.list_versions(store, MODEL)] == ["v1", "v2"]


def test_champion_moves_only_to_a_version_that_verifies(tmp_path):
    store = str(tmp_path)
    assert register_one(store, MODEL, 1).returncode == 0
    assert register_one(store, MODEL, 2).returncode == 0
    registry.set_alias(store, MODEL, "v1")
    model_pt = tmp_path / "registry" / MODEL / "v2" / "model.pt"
    data = bytearray(model_pt.read_bytes())
    data[100] ^= 0xFF
    model_pt.write_bytes(bytes(data))
    with pytest.raises(registry.RegistryError, match="champion not moved to m v2: .*sha256"):
        registry.promote(store, MODEL, "v2", force=True)
    assert registry.get_alias(store, MODEL) == "v1"
    report = check_store(store, repair=True, grace_s=0)
    assert not report.healthy  # damage to a committed version is reported, never "repaired" away
    assert [f.kind for f in report.findings] == ["damaged"] and model_pt.exists()


def test_disk_full_during_registration_is_one_line_and_leaves_nothing(tmp_path):
    store = str(tmp_path)
    assert register_one(store, MODEL, 1).returncode == 0
    full = register_one(store, MODEL, 2, HVT_FAULT_ENOSPC_AT="write#1")
    assert full.returncode != 0 and "No space left on device" in full.stderr
    assert [v.version for v in registry.list_versions(store, MODEL)] == ["v1"]
    assert check_store(store).healthy  # the failed writer removed its staging folder itself


# ---------------------------------------------------------------- dataset commits


@pytest.mark.parametrize("point", ["write#2", "rename#4", "commit:quarantine", "commit:manifest"])
def test_killed_dataset_commit_heals_and_resumes_to_the_same_manifest(synthetic, reference, tmp_path, point):
    ref_store, ref = reference
    killed = hvt(*_shard_args(synthetic, tmp_path), HVT_FAULT_KILL_AT=point)
    assert killed.returncode == 137, killed.stderr[-2000:]
    if point == "commit:manifest":
        proc = hvt("store", "check", "--store", str(tmp_path))
        assert proc.returncode == 1 and "Traceback" not in proc.stderr  # the missing commit record is listed
        assert "version.json" in proc.stdout
    else:
        assert not check_store(str(tmp_path)).healthy  # leftovers of the killed run are listed
    _healthy_after_repair(tmp_path)
    rerun = _shard(synthetic, tmp_path)
    assert rerun.version == ref.version
    version = tmp_path / "datasets" / "syn" / ref.version
    assert (version / "manifest.json").read_bytes() == Path(ref.manifest_url).read_bytes()
    assert json.loads((version / "version.json").read_text())["manifest_sha256"]
    _healthy_after_repair(tmp_path)


def test_empty_dataset_commit_record_is_reported_and_rewritten(synthetic, reference, tmp_path):
    ref_store, ref = reference
    _shard(synthetic, tmp_path)
    record = tmp_path / "datasets" / "syn" / ref.version / "version.json"
    record.write_bytes(b"")  # what the earlier commit left when killed between create and write
    from hvt.ingest import list_dataset_versions

    assert [v.version for v in list_dataset_versions(str(tmp_path), "syn")] == [ref.version]  # read, not crashed
    _shard(synthetic, tmp_path)
    assert json.loads(record.read_text())["version"] == ref.version


def test_disk_full_at_dataset_commit_is_one_line_then_resumes(synthetic, reference, tmp_path):
    ref_store, ref = reference
    full = hvt(*_shard_args(synthetic, tmp_path), HVT_FAULT_ENOSPC_AT="commit:quarantine")
    assert full.returncode != 0 and "No space left on device" in full.stderr and "Traceback" not in full.stderr
    assert not (tmp_path / "datasets" / "syn" / ref.version / "manifest.json").exists()
    _shard(synthetic, tmp_path)
    manifest = tmp_path / "datasets" / "syn" / ref.version / "manifest.json"
    assert manifest.read_bytes() == Path(ref.manifest_url).read_bytes()
    _healthy_after_repair(tmp_path)


# ---------------------------------------------------------------- damaged shards


def _damaged_copy(reference, tmp_path: Path, how: str) -> tuple[Path, str]:
    import shutil

    ref_store, ref = reference
    store = tmp_path / "store"
    shutil.copytree(ref_store, store)
    version = store / "datasets" / "syn" / ref.version
    manifest = json.loads((version / "manifest.json").read_text())
    shard = manifest["splits"]["train"]["shards"][1]["path"]
    path = version / shard
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flipped":
        flipped = bytearray(data)
        for offset in (700, 900, 1100):
            flipped[offset] ^= 0x5A
        path.write_bytes(bytes(flipped))
    else:  # its entry dropped from the manifest
        del manifest["splits"]["train"]["shards"][1]
        (version / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return store, shard


@pytest.mark.parametrize("how", ["truncated", "flipped", "dropped"])
def test_damaged_shard_is_caught_before_training(reference, tmp_path, how):
    ref_store, ref = reference
    store, shard = _damaged_copy(reference, tmp_path, how)
    version = str(store / "datasets" / "syn" / ref.version)
    with pytest.raises(DataIntegrityError) as caught:
        check_splits(version, ["train", "val"])
    message = str(caught.value)
    assert "\n" not in message
    assert (shard in message) if how != "dropped" else ("manifest" in message and "changed after" in message)
    if how == "truncated":  # the command: one line naming the shard, exit 2, before any Ray worker starts
        train = hvt("train", "--store", str(store), "--dataset", "syn", "--epochs", "1", timeout=240)
        assert train.returncode == 2 and "Traceback" not in train.stderr, train.stderr[-3000:]
        last = train.stderr.strip().splitlines()[-1]
        assert last.startswith("hvt train: error: shard ") and shard in last
    report = check_store(str(store), repair=True, grace_s=0)
    assert not report.healthy  # damage to committed data stays a finding until it is re-sharded


def test_skip_bad_shards_is_explicit_and_counted(reference, tmp_path):
    from hvt.stages import eval_set_identity, integrity_metrics

    ref_store, ref = reference
    store, shard = _damaged_copy(reference, tmp_path, "truncated")
    version = str(store / "datasets" / "syn" / ref.version)
    checks = check_splits(version, ["train", "val"], skip_bad=True)
    manifest = json.loads(Path(version, "manifest.json").read_text())
    lost = next(s["samples"] for s in manifest["splits"]["train"]["shards"] if s["path"] == shard)
    assert checks["train"].samples == manifest["splits"]["train"]["samples"] - lost
    assert [p.path for p in checks["train"].skipped] == [shard]
    metrics = integrity_metrics(checks, {"train_decode_failures": 1})
    assert metrics["skipped_shards"][0].startswith(f"train/{shard}") and metrics["skipped_samples"] == lost
    sha = "a" * 64
    assert eval_set_identity(sha, "val", checks["val"], 0) == sha  # val untouched: the full set
    assert eval_set_identity(sha, "val", checks["train"], 0) != sha  # a shard left out: another set
    assert eval_set_identity(sha, "val", checks["val"], 2) != sha  # clips that failed: another set


# ---------------------------------------------------------------- output


def test_json_output_is_json_only_even_when_something_prints(tmp_path):
    code = ("import os, sys, hvt.commands.store as s\n"
            "orig = s.run_check\n"
            "def noisy(args):\n"
            "    os.write(1, b'(raylet) warning from a library\\n'); print('stray print')\n"
            "    return orig(args)\n"
            "s.run_check = noisy\n"
            "import hvt.cli\n"
            f"sys.exit(hvt.cli.main(['store', 'check', '--store', {str(tmp_path)!r}, '--json']))\n")
    import subprocess
    import sys

    from store_faults_helpers import env

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env())
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["healthy"] is True
    assert "warning from a library" in proc.stderr and "stray print" in proc.stderr


def test_transient_errors_are_retried_within_a_bound_then_one_line(monkeypatch):
    from hvt import store_faults

    monkeypatch.setattr(store_faults, "_FIRST_DELAY", 0.01)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError(111, "Connection refused")
        return "ok"

    assert store_faults.retrying(flaky, "s3://bucket/x", "reading", budget=5) == "ok" and len(calls) == 3
    with pytest.raises(store_faults.StoreUnavailableError) as caught:
        store_faults.retrying(lambda: (_ for _ in ()).throw(TimeoutError("timed out")), "s3://bucket/p/x",
                              "reading", budget=0.2)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("store s3://bucket unavailable while reading s3://bucket/p/x")
    with pytest.raises(FileNotFoundError):  # not transient: not retried
        store_faults.retrying(lambda: (_ for _ in ()).throw(FileNotFoundError("gone")), "s3://b/x", "reading")
    assert store_faults.is_transient(RuntimeError("An error occurred (SlowDown) when calling PutObject"))
    assert not store_faults.is_transient(ValueError("bad input"))
