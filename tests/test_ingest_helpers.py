"""Shared bits of the ingest tests (no tests here): where the real data lives, reading shards back."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from shared_data import shared_path

REPO = Path(__file__).resolve().parents[1]


def realdata() -> Path:
    """The shared real clips and annotation files; skip without them, except under CI where they must exist."""
    return shared_path("realdata")


def read_tar(data: bytes) -> dict[str, dict]:
    """``key -> {"json": dict, "ext": str, "video": bytes}`` for one shard, checking member pairing."""
    samples: dict[str, dict] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar.getmembers():
            key, ext = member.name.split(".", 1)
            payload = tar.extractfile(member).read()
            sample = samples.setdefault(key, {})
            if ext == "json":
                sample["json"] = json.loads(payload)
            else:
                sample["ext"], sample["video"] = ext, payload
    for key, sample in samples.items():
        assert set(sample) == {"json", "ext", "video"}, f"{key} lacks a member: {sorted(sample)}"
    return samples


def read_quarantine(path: Path | str) -> list[dict]:
    text = Path(path).read_text()
    return [json.loads(line) for line in text.splitlines() if line]


def manifest_shards(manifest: dict) -> list[dict]:
    """Every shard of a manifest, split by split in order, as ``{name, split, samples, bytes, sha256}``."""
    out = []
    for split in sorted(manifest["splits"]):
        for shard in manifest["splits"][split]["shards"]:
            out.append({"name": shard["path"], "split": split, **{k: shard[k] for k in ("samples", "bytes", "sha256")}})
    return out
