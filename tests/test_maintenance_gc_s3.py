"""`hvt store gc` on a real S3 server (SeaweedFS `weed mini`): the same rules as on a local store, through fsspec,
and a writer that starts while gc deletes keeps the objects it wrote (S3 has no rename: gc deletes exactly the
objects it listed)."""

from __future__ import annotations

import json
import os

import pytest
from s3server import seaweedfs_server

from hvt import registry, storage
from hvt.ingest import ShardConfig, make_synthetic_dataset, shard_dataset
from hvt.maintenance import removal
from hvt.maintenance.gc import collect_garbage
from hvt.maintenance.lease import lease_url
from hvt.maintenance.store_check import check_store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _objects(store: str) -> dict[str, int]:
    fs, root = storage.get_fs(store)
    fs.invalidate_cache()
    return {name[len(root):].lstrip("/"): info["size"] for name, info in fs.find(root, detail=True).items()}


def _write_run(store: str, run: str) -> None:
    folder = storage.join(store, "runs", run)
    name = "checkpoint_2026-12-01_00-00-00.000000"
    storage.write_bytes(storage.join(folder, name, "train_state.pt"), os.urandom(4096))
    storage.write_bytes(storage.join(folder, ".validate_storage_marker"), b"")
    storage.write_json(storage.join(folder, "checkpoint_manager_snapshot.json"),
                       {"checkpoint_results": [{"checkpoint_dir_name": name, "metrics": {"epoch": 0}}]})


def test_gc_on_s3_keeps_lineage_and_a_leased_run_and_spares_a_concurrent_writer(tmp_path, monkeypatch):
    synth = make_synthetic_dataset(str(tmp_path / "videos"), classes=3, per_class=2, frames=16, size=(64, 64), seed=6)
    with seaweedfs_server(tmp_path) as s3:
        store = f"s3://{s3.bucket}/gc"
        made = []
        for day, shard_size in enumerate((2, 3)):
            result = shard_dataset(ShardConfig(annotations=synth.annotations_csv, videos=synth.videos_dir,
                                               store=store, name="syn", class_list=synth.classes_txt,
                                               shard_size=shard_size))
            record = storage.join(store, "datasets", "syn", result.version, "version.json")
            storage.write_json(record, {**storage.read_json(record), "created_at": f"2026-11-2{day}T00:00:00+00:00"})
            made.append(result.version)
        old, new = made
        runs = {key: f"tiny--syn-{new}--{key}" for key in ("early", "late", "champ", "live")}
        for run in runs.values():
            _write_run(store, run)
        registry.register_version(store, "m", files={"model.pt": os.urandom(1024)}, metrics={"val_top1": 0.5},
                                  lineage={"dataset": "syn", "dataset_version": new, "run_name": runs["champ"]},
                                  created_at="2026-12-01T00:00:00+00:00")
        registry.set_alias(store, "m", "v1")
        storage.write_json(lease_url(store, runs["live"]), {"owner": "test:1"})
        early = f"runs/{runs['early']}/checkpoint_2026-12-06_00-00-00.000000/train_state.pt"
        late = f"runs/{runs['late']}/checkpoint_2026-12-06_00-00-00.000000/train_state.pt"

        def before_last_check(url: str) -> None:  # a writer resumes run "early" after gc decided to remove it
            if url.endswith(runs["early"]):
                storage.write_bytes(storage.join(store, early), b"early")

        bulk_delete = removal._rm_missing_ok

        def during_delete(fs, paths) -> None:  # ... and run "late" while gc is already deleting its objects
            if any(runs["late"] in p for p in paths):
                storage.write_bytes(storage.join(store, late), b"late")
            bulk_delete(fs, paths)

        before = _objects(store)
        dry = collect_garbage(store, keep_runs=0, keep_dataset_versions=1, grace_s=0, dry_run=True)
        assert _objects(store) == before
        monkeypatch.setattr(removal, "_about_to_remove", before_last_check)
        monkeypatch.setattr(removal, "_rm_missing_ok", during_delete)
        report = collect_garbage(store, keep_runs=0, keep_dataset_versions=1, grace_s=0)

        planned = [storage.join(store, "datasets", "syn", old)] + [storage.join(store, "runs", runs[k])
                                                                   for k in ("early", "late")]
        assert sorted(i.path for i in dry.removed) == sorted(planned)
        assert sorted(i.path for i in report.removed) == sorted(planned[0::2])  # "early" was kept after all
        gone = (f"datasets/syn/{old}/", f"runs/{runs['late']}/")
        assert report.bytes_freed == sum(size for name, size in before.items() if name.startswith(gone))
        after = _objects(store)
        assert after == {**{n: s for n, s in before.items() if not n.startswith(gone)}, early: 5, late: 4}
        kept = {i.path.rsplit("/", 1)[-1]: i.reason for i in report.kept}
        assert kept[runs["early"]].startswith("written to while gc ran")
        assert "lineage of m v1 (champion)" in kept[runs["champ"]] and "lease is held" in kept[runs["live"]]
        assert "written while gc ran were left" in [i for i in report.removed if "runs" in i.path][0].reason
        assert registry.verify_version(registry.get_version(store, "m", "champion")) == []
        assert check_store(store).findings == []
        json.dumps(report.as_dict())  # the CLI's --json document
