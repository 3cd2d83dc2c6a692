"""`hvt store gc` (retention) on a store of real artefacts: four versions of a sharded synthetic dataset, registry
versions with the lineage `register_run` writes, and run folders laid out as Ray Train writes them.

gc must keep the champion's lineage (its dataset version and its run), every dataset version a registered version
names, the newest dataset version and the runs in progress (one holding a lease in a long, silent epoch, one written
a moment ago); it removes the rest, reports the bytes, removes nothing in a dry run, leaves `hvt store check`
healthy, and never takes the files of a writer that starts while it runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hvt import registry, storage
from hvt.ingest import ShardConfig, list_dataset_versions, make_synthetic_dataset, shard_dataset
from hvt.integrity import check_splits
from hvt.maintenance import removal
from hvt.maintenance.gc import GcError, collect_garbage
from hvt.maintenance.lease import lease_url
from hvt.maintenance.store_check import check_store

pytestmark = pytest.mark.timeout(300)

MODEL = "m"
DAY = 86400.0


def _write_run(store: Path, run: str, epochs: int) -> Path:
    """A run folder as Ray Train leaves it: one folder per kept checkpoint, its snapshot, its storage marker."""
    folder = store / "runs" / run
    results = []
    for epoch in range(epochs):
        name = f"checkpoint_2026-12-0{epoch + 1}_00-00-00.000000"
        (folder / name).mkdir(parents=True)
        (folder / name / "train_state.pt").write_bytes(os.urandom(4096 + 512 * epoch))
        results.append({"version": 0, "checkpoint_dir_name": name, "metrics": {"epoch": epoch, "val_top1": 0.5}})
    (folder / ".validate_storage_marker").write_bytes(b"")
    (folder / "checkpoint_manager_snapshot.json").write_text(json.dumps({"checkpoint_results": results}))
    return folder


def _age(path: Path, seconds: float) -> None:
    """Make every file and folder under ``path`` look ``seconds`` old."""
    stamp = time.time() - seconds
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.utime(os.path.join(root, name), (stamp, stamp))
    os.utime(path, (stamp, stamp))


def _register(store: Path, dataset, run: str, **metrics) -> registry.RegistryVersion:
    lineage = {"dataset": dataset.name, "dataset_version": dataset.version, "run_name": run,
               "run_path": str(store / "runs" / run), "epoch": 1, "model_variant": "tiny"}
    return registry.register_version(str(store), MODEL, files={"model.pt": os.urandom(2048)},
                                     metrics={"val_top1": 0.5, **metrics}, lineage=lineage,
                                     created_at="2026-12-01T00:00:00+00:00")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The store, built once (copied per test): dataset versions d0 (oldest) .. d3 (newest), registry v1 (champion,
    trained on d1), v2 (trained on d3, evaluated on d2 — named only by its ``eval_set``), and old runs."""
    synth = make_synthetic_dataset(str(tmp_path_factory.mktemp("gc-videos")), classes=3, per_class=2, frames=16,
                                   size=(64, 64), seed=5)
    store = tmp_path_factory.mktemp("gc-store")
    made = []
    for day, shard_size in enumerate((2, 3, 4, 5)):  # another shard size: another version of the same videos
        result = shard_dataset(ShardConfig(annotations=synth.annotations_csv, videos=synth.videos_dir,
                                           store=str(store), name="syn", class_list=synth.classes_txt,
                                           shard_size=shard_size))
        record = store / "datasets" / "syn" / result.version / "version.json"
        commit = json.loads(record.read_text())
        commit["created_at"] = f"2026-11-2{day}T00:00:00+00:00"  # committed days apart, in this order
        record.write_text(json.dumps(commit))
        made.append(result.version)
    versions = {v.version: v for v in list_dataset_versions(str(store), "syn")}
    d = [versions[v] for v in made]
    runs = {key: f"tiny--syn-{d[i].version}--{key}" for key, i in
            (("old", 0), ("champ", 1), ("reg", 3), ("live", 3), ("fresh", 3))}
    for run in runs.values():
        _write_run(store, run, epochs=2)
    _register(store, d[1], runs["champ"])
    v2 = _register(store, d[3], runs["reg"], eval_set=f"syn/{d[2].version}/val")
    registry.set_alias(str(store), MODEL, "v1", reason="first version")
    assert v2.version == "v2"
    for sub in ("datasets", "runs"):
        _age(store / sub, 2 * DAY)
    return store, [v.version for v in d], runs


@pytest.fixture
def store(template, tmp_path):
    source, d, runs = template
    copy = tmp_path / "store"
    shutil.copytree(source, copy)  # copies modification times too
    _age(copy / "runs" / runs["fresh"] / "checkpoint_2026-12-02_00-00-00.000000", 0)  # written a moment ago
    storage.write_json(lease_url(str(copy), runs["live"]), {"owner": "test:1"})  # long epoch: folder silent
    return copy, d, runs


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def _bytes_under(root: Path, folder: str) -> int:
    return sum(size for name, size in _files(root).items() if name.startswith(folder + "/"))


def test_gc_keeps_lineage_aliases_running_runs_and_the_newest_and_removes_the_rest(store):
    root, d, runs = store
    before = _files(root)
    doomed = [f"runs/{runs['old']}", f"runs/{runs['reg']}", f"datasets/syn/{d[0]}"]
    expected_bytes = sum(_bytes_under(root, folder) for folder in doomed)
    assert expected_bytes > 3 * 8000  # checkpoints and shards, not just markers

    dry = collect_garbage(str(root), keep_runs=1, keep_dataset_versions=1, dry_run=True)
    assert _files(root) == before  # a dry run removes nothing
    assert sorted(i.path for i in dry.removed) == sorted(str(root / f) for f in doomed)
    assert dry.bytes_freed == expected_bytes

    report = collect_garbage(str(root), keep_runs=1, keep_dataset_versions=1)
    assert sorted(i.path for i in report.removed) == sorted(i.path for i in dry.removed)  # as the dry run said
    assert report.bytes_freed == dry.bytes_freed == expected_bytes
    after = _files(root)
    assert after == {name: size for name, size in before.items() if not name.startswith(tuple(f + "/" for f in doomed))}

    kept = {Path(i.path).name: i.reason for i in report.kept}
    assert "lineage of m v1 (champion)" in kept[runs["champ"]]
    assert "lease is held" in kept[runs["live"]]
    assert "within the grace period" in kept[runs["fresh"]]
    assert "lineage of m v1" in kept[d[1]]  # the champion's dataset version
    assert "lineage of m v2" in kept[d[2]]  # named only by v2's evaluation set
    assert "lineage of m v2" in kept[d[3]] or "newest" in kept[d[3]]
    assert not (root / ".gc-trash").exists()  # nothing left aside

    # the champion still loads and its data still verifies; the store is healthy, by the library and the CLI
    champion = registry.get_version(str(root), MODEL, "champion")
    assert registry.verify_version(champion) == []
    assert [c.skipped for c in check_splits(str(root / "datasets" / "syn" / d[1]), ["train", "val"]).values()] == [[], []]
    assert check_store(str(root)).findings == []
    cli = subprocess.run([sys.executable, "-m", "hvt.cli", "store", "check", "--store", str(root)],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0 and "healthy" in cli.stdout, cli.stdout + cli.stderr

    again = collect_garbage(str(root), keep_runs=1, keep_dataset_versions=1)
    assert again.removed == [] and again.bytes_freed == 0


@pytest.mark.parametrize("writer", ["checkpoint", "lease"])
def test_a_run_that_starts_while_gc_runs_keeps_its_files(store, monkeypatch, writer):
    """Between gc's decision and its delete, a writer resumes a doomed run (a new checkpoint, or only its lease)
    and another run starts: both keep every file, and so does the dataset version the resumed run trains on; the
    other doomed run still goes."""
    root, d, runs = store
    doomed_run = root / "runs" / runs["old"]
    newcomer = root / "runs" / "tiny--syn-new--started-during-gc"

    def writer_starts(url: str) -> None:
        if Path(url) == doomed_run:
            storage.write_json(lease_url(str(root), runs["old"]), {"owner": "resumed:2"})
            if writer == "checkpoint":
                (doomed_run / "checkpoint_2026-12-06_00-00-00.000000").mkdir()
                (doomed_run / "checkpoint_2026-12-06_00-00-00.000000" / "train_state.pt").write_bytes(b"new")
            _write_run(root, newcomer.name, epochs=1)

    monkeypatch.setattr(removal, "_about_to_remove", writer_starts)
    before = _files(root)
    report = collect_garbage(str(root), keep_runs=1, keep_dataset_versions=1)

    after = _files(root)
    resumed = {n: s for n, s in before.items() if n.startswith(f"runs/{runs['old']}/")}
    assert resumed and all(after.get(n) == s for n, s in resumed.items())  # every old file is still there
    if writer == "checkpoint":
        assert after[f"runs/{runs['old']}/checkpoint_2026-12-06_00-00-00.000000/train_state.pt"] == 3
    assert (newcomer / "checkpoint_manager_snapshot.json").exists()
    kept = {Path(i.path).name: i.reason for i in report.kept}
    assert kept[runs["old"]].startswith("written to while gc ran") and "put back" in kept[runs["old"]]
    assert [Path(i.path).name for i in report.removed] == [runs["reg"]]
    assert "run " + runs["old"] + " started on it" in kept[d[0]]  # the resumed run trains on d0: it stays too
    assert not (root / ".gc-trash").exists()


def test_gc_refuses_when_a_registry_record_is_unreadable(store):
    root, d, runs = store
    (root / "registry" / MODEL / "v2" / "version.json").write_text("{ cut sh")
    before = _files(root)
    with pytest.raises(GcError, match="removed nothing.*m v2|removed nothing.*v2"):
        collect_garbage(str(root), keep_runs=0, keep_dataset_versions=1)
    assert _files(root) == before


def _hvt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hvt.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_gc_prints_what_it_removed_and_rejects_bad_input_in_one_line(store):
    root, d, runs = store
    before = _files(root)
    for bad, says in ((["--keep-dataset-versions", "0"], "must be 1 or more"),
                      (["--keep-dataset", "syn"], "expected NAME@VERSION"),
                      (["--keep-dataset", "syn@v-nope"], "no committed version")):
        proc = _hvt("store", "gc", "--store", str(root), *bad)
        assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert _files(root) == before

    dry = _hvt("store", "gc", "--store", str(root), "--keep-runs", "1", "--keep-dataset-versions", "1", "--dry-run",
               "--json")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["dry_run"] and len(planned["removed"]) == 3 and _files(root) == before

    # pinning the oldest version keeps it; the runs go as planned
    done = _hvt("store", "gc", "--store", str(root), "--keep-runs", "1", "--keep-dataset-versions", "1",
                "--keep-dataset", f"syn@{d[0]}")
    assert done.returncode == 0, done.stderr
    freed = planned["bytes_freed"] - _bytes_under(Path(str(root)), f"datasets/syn/{d[0]}")
    assert f"removed 2 folder(s), freed {freed} bytes" in done.stdout, done.stdout
    assert "pinned (--keep-dataset)" in done.stdout and (root / "datasets" / "syn" / d[0]).is_dir()
    assert not (root / "runs" / runs["old"]).exists() and (root / "runs" / runs["champ"]).is_dir()


def test_an_ingest_in_progress_keeps_every_version_of_its_dataset(store):
    """A version being written (no manifest yet) may read any earlier version as its incremental base."""
    root, d, runs = store
    (root / "datasets" / "syn" / "v-being-written").mkdir()
    (root / "datasets" / "syn" / "v-being-written" / "train-000000.tar").write_bytes(b"partial")
    report = collect_garbage(str(root), keep_runs=1, keep_dataset_versions=1)
    assert (root / "datasets" / "syn" / d[0]).is_dir()
    assert "an ingest of syn is in progress" in {Path(i.path).name: i.reason for i in report.kept}[d[0]]
    assert sorted(Path(i.path).name for i in report.removed) == sorted([runs["old"], runs["reg"]])

    # a committed version written to a moment ago (a re-run of the same `hvt shard`) is left alone as well
    shutil.rmtree(root / "datasets" / "syn" / "v-being-written")
    os.utime(root / "datasets" / "syn" / d[0] / "manifest.json")
    again = collect_garbage(str(root), keep_runs=1, keep_dataset_versions=1)
    assert again.removed == [] and "within the grace period" in {Path(i.path).name: i.reason for i in again.kept}[d[0]]


def test_store_check_lists_what_an_interrupted_gc_or_a_killed_trainer_leaves(store):
    root, d, runs = store
    (root / ".gc-trash" / "0badc0de-some-run" / "checkpoint_x").mkdir(parents=True)
    (root / ".gc-trash" / "0badc0de-some-run" / "checkpoint_x" / "train_state.pt").write_bytes(b"x")
    stale = Path(lease_url(str(root), runs["old"]))
    storage.write_json(str(stale), {"owner": "killed:9"})
    _age(stale, 2 * 3600)  # the live lease of runs["live"] is fresh: not a finding
    _age(root / ".gc-trash", 2 * 3600)  # --repair leaves a fresh one alone (a gc may be at work on it)
    found = sorted((f.kind, Path(f.path).name) for f in check_store(str(root)).findings)
    assert found == [("leftover", "0badc0de-some-run"), ("leftover", stale.name)]
    assert check_store(str(root), repair=True).healthy
    assert not stale.exists() and Path(lease_url(str(root), runs["live"])).exists()
