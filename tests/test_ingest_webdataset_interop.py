"""Shards are standard WebDataset: the format's own readers find every sample with its metadata.

Written with ``webdataset.TarWriter`` (hvt/ingest/writer.py); read back here with ``webdataset.WebDataset`` and
with ``ray.data.read_webdataset``, both with explicit decoders (video bytes stay bytes, json is parsed as JSON,
nothing is unpickled). Every sample of the manifest must come back, its video bytes matching the sha256 in its
own metadata.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from hvt.ingest import ShardConfig, shard_dataset
from hvt.ingest.synthetic import make_synthetic_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("interop")
    made = make_synthetic_dataset(str(root / "videos"), classes=3, per_class=4, frames=12, size=(64, 64), seed=2)
    result = shard_dataset(ShardConfig(annotations=made.annotations_csv, videos=made.videos_dir,
                                       store=str(root / "store"), name="interop", shard_size=3))
    manifest = json.loads(Path(result.manifest_url).read_text())
    tars = {split: [str(Path(result.path) / s["path"]) for s in info["shards"]]
            for split, info in manifest["splits"].items()}
    return manifest, tars


def _check(samples: list[dict], manifest: dict, split: str) -> None:
    assert len(samples) == manifest["splits"][split]["samples"]
    for sample in samples:
        meta = sample["json"]
        assert meta["key"] == sample["__key__"] and meta["split"] == split
        assert manifest["classes"][meta["label"]] == meta["label_name"]
        video = sample[meta["container"]]
        assert hashlib.sha256(video).hexdigest() == meta["sha256"]


def _decode_json_only(sample: dict) -> dict:
    """Explicit decoder: parse ``json``; every other member stays raw bytes (no pickle, no image decoding)."""
    out = {}
    for key, value in sample.items():
        suffix = key.rsplit(".", 1)[-1]
        out[suffix if not key.startswith("__") else key] = json.loads(value) if suffix == "json" else value
    return out


def test_webdataset_library_reads_every_sample(dataset):
    import webdataset

    manifest, tars = dataset
    for split, paths in tars.items():
        samples = [_decode_json_only(s) for s in webdataset.WebDataset(paths, shardshuffle=False)]
        _check(samples, manifest, split)


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_ray_read_webdataset_reads_every_sample(dataset, shared_ray):
    import ray

    def decoder(sample: dict) -> dict:  # nested: shipped to Ray's read tasks by value
        return {(k.rsplit(".", 1)[-1] if not k.startswith("__") else k): (json.loads(v) if k.endswith("json") else v)
                for k, v in sample.items()}

    manifest, tars = dataset
    for split, paths in tars.items():
        rows = ray.data.read_webdataset(paths, decoder=decoder).take_all()
        _check(rows, manifest, split)
