"""Sharding from s3:// to s3:// against a real SeaweedFS server (signatures checked, data on disk)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import s3fs
from s3server import seaweedfs_server
from test_ingest_helpers import manifest_shards, read_quarantine, read_tar

from hvt.ingest import (
    ShardConfig,
    latest_dataset_version,
    list_dataset_versions,
    load_manifest,
    shard_dataset,
    shard_urls,
)
from hvt.ingest.synthetic import make_synthetic_dataset

pytestmark = pytest.mark.timeout(240)


def test_shard_s3_to_s3(tmp_path: Path) -> None:
    ds = make_synthetic_dataset(str(tmp_path / "data"), classes=2, per_class=5, frames=10, size=(64, 48))
    videos = sorted(Path(ds.videos_dir).iterdir())
    videos[0].write_bytes(videos[0].read_bytes()[:700])  # truncated upload
    with seaweedfs_server(tmp_path) as s3:
        fs = s3fs.S3FileSystem()
        prefix = f"{s3.bucket}/raw/kinetics/train"
        fs.put(ds.videos_dir + "/", prefix + "/", recursive=True)
        fs.put(ds.annotations_csv, f"{s3.bucket}/raw/annotations.csv")
        store = f"s3://{s3.bucket}/store"
        config = ShardConfig(annotations=f"s3://{s3.bucket}/raw/annotations.csv",
                             videos=f"s3://{s3.bucket}/raw", store=store, name="synth-s3", shard_size=3,
                             workers=2)
        result = shard_dataset(config)
        assert result.counts == {"input": 10, "sharded": 9, "quarantined": 1, "by_reason": {"corrupt": 1}}
        assert result.path == f"{store}/datasets/synth-s3/{result.version}"
        assert result.manifest_url == f"{result.path}/manifest.json"

        fs.invalidate_cache()
        names = sorted(p.rsplit("/", 1)[1] for p in fs.find(result.path.removeprefix("s3://")))
        assert not any(".tmp-" in n for n in names), names
        assert {"manifest.json", "version.json", "quarantine.jsonl"} <= set(names)
        manifest = load_manifest(store, "synth-s3", result.version)
        assert manifest["counts"] == result.counts
        urls = shard_urls(result.manifest_url, "train")
        assert urls and all(u.startswith(f"{store}/datasets/synth-s3/") for u in urls)
        seen = 0
        for shard in manifest_shards(manifest):
            data = fs.cat_file(f"{result.path.removeprefix('s3://')}/{shard['name']}")
            samples = read_tar(data)
            assert len(samples) == shard["samples"]
            for sample in samples.values():
                assert sample["json"]["source"].startswith(f"s3://{prefix}/")
                assert sample["video"] == fs.cat_file(sample["json"]["source"].removeprefix("s3://"))
            seen += len(samples)
        assert seen == 9
        qpath = tmp_path / "q.jsonl"
        fs.get(f"{result.path.removeprefix('s3://')}/quarantine.jsonl", str(qpath))
        (record,) = read_quarantine(qpath)
        assert record["reason"] == "corrupt" and record["source"].endswith(videos[0].name)

        versions = list_dataset_versions(store, "synth-s3")
        assert [v.version for v in versions] == [result.version] and versions[0].created_at
        latest = latest_dataset_version(store, "synth-s3")
        assert latest is not None and latest.manifest_url == result.manifest_url

        again = shard_dataset(config.model_copy(update={"workers": 1}))
        assert (again.version, again.shards_written, again.shards_skipped) == (result.version, 0, result.shards)
        assert json.loads(fs.cat_file(result.manifest_url.removeprefix("s3://"))) == manifest
