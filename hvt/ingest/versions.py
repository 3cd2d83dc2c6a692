"""Dataset versions in the store: ``{store}/datasets/<name>/<version>/``.

A version exists when its ``manifest.json`` exists (written last, after every shard and its stats). The time
it was committed is kept out of the manifest — so that a re-run produces the same manifest bytes — in
``version.json``, written once, right after the first manifest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import posixpath
from dataclasses import dataclass
from typing import Any

from hvt import storage

MANIFEST = "manifest.json"
VERSION_FILE = "version.json"
QUARANTINE = "quarantine.jsonl"

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """No such dataset (version) in the store, or its manifest is damaged; the message says what to do."""


@dataclass(frozen=True)
class DatasetVersion:
    name: str
    version: str
    path: str  # the version folder
    manifest_url: str
    created_at: str | None  # ISO 8601 UTC, from version.json
    num_samples: int | None = None


def dataset_root(store: str | None, name: str) -> str:
    return storage.join(storage.resolve_store(store), "datasets", name)


def version_path(store: str | None, name: str, version: str) -> str:
    return storage.join(dataset_root(store, name), version)


def commit_version(path: str, name: str, version: str, manifest_sha256: str) -> None:
    """Record when the version first became whole; later re-runs leave the record as it is."""
    record = {
        "name": name,
        "version": version,
        "manifest_sha256": manifest_sha256,
        # microseconds: an incremental re-shard can commit a new version within the second of the previous one,
        # and "latest" must still be the later of the two
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds"),
    }
    url = storage.join(path, VERSION_FILE)
    blob = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
    if storage.create_exclusive(url, blob):
        return
    try:
        existing = storage.read_json(url)
        if isinstance(existing, dict) and existing.get("manifest_sha256") == manifest_sha256:
            return
        problem = f"records manifest sha256 {str(existing.get('manifest_sha256'))[:12]}… (not this manifest's)" \
            if isinstance(existing, dict) else "is not a JSON object"
    except storage.DamagedFileError as err:
        problem = err.problem
    log.warning("%s %s; rewriting it for the manifest now committed", url, problem)
    storage.write_bytes(url, blob)


def list_dataset_versions(store: str | None, name: str) -> list[DatasetVersion]:
    """Committed versions of dataset ``name``, oldest first (by ``created_at``, then id)."""
    root = dataset_root(store, name)
    fs, _ = storage.get_fs(root)
    fs.invalidate_cache()  # object-store listings are cached per process; versions appear from other processes
    found = []
    for version in storage.listdir(root):
        path = storage.join(root, version)
        manifest_url = storage.join(path, MANIFEST)
        if not storage.exists(manifest_url):
            continue  # unfinished: it does not exist yet
        created_at, num_samples = None, None
        try:
            record = storage.read_json(storage.join(path, VERSION_FILE))
            created_at = record.get("created_at") if isinstance(record, dict) else None
        except FileNotFoundError:
            pass
        except storage.DamagedFileError as err:
            log.warning("dataset %s %s: %s (ordering it by name)", name, version, err)
        try:
            num_samples = storage.read_json(manifest_url)["counts"]["sharded"]
        except storage.DamagedFileError as err:
            log.warning("skipping dataset %s %s: %s", name, version, err)
            continue
        except (KeyError, TypeError):
            pass
        found.append(DatasetVersion(name, version, path, manifest_url, created_at, num_samples))
    return sorted(found, key=lambda v: (_created_key(v.created_at), v.version))


def _created_key(created_at: str | None) -> dt.datetime:
    """``created_at`` as an aware datetime for ordering (ISO 8601, seconds or microseconds); unknown sorts first."""
    oldest = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    if not created_at:
        return oldest
    try:
        when = dt.datetime.fromisoformat(created_at)
    except (TypeError, ValueError):
        return oldest
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def latest_dataset_version(store: str | None, name: str) -> DatasetVersion | None:
    versions = list_dataset_versions(store, name)
    return versions[-1] if versions else None


def load_manifest(store: str | None, name: str, version: str) -> dict:
    url = storage.join(version_path(store, name, version), MANIFEST)
    try:
        return storage.read_json(url)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"dataset {name!r} has no committed version {version!r} (no {url}); "
            "list versions with list_dataset_versions()"
        ) from None


def shard_urls(manifest_url: str, split: str) -> list[str]:
    """URLs of the shards of ``split``, in order, from a manifest URL."""
    manifest = storage.read_json(manifest_url)
    splits = manifest.get("splits", {})
    if split not in splits:
        known = ", ".join(sorted(splits)) or "none"
        raise KeyError(f"split {split!r} not in {manifest_url} (splits: {known})")
    base = posixpath.dirname(manifest_url) if "://" in manifest_url else manifest_url.rsplit("/", 1)[0]
    return [storage.join(base, shard["path"]) for shard in splits[split]["shards"]]


@dataclass(frozen=True)
class DatasetRef:
    """A committed dataset version as training and evaluation use it: where it is and its parsed manifest."""

    name: str
    version: str
    path: str
    manifest: dict[str, Any]
    manifest_sha256: str

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    def split_samples(self, split: str) -> int:
        info = self.manifest.get("splits", {}).get(split)
        if not info:
            return 0
        return int(info.get("samples", sum(s.get("samples", 0) for s in info.get("shards", []))))


def resolve_dataset(store: str, name: str, version: str | None) -> DatasetRef:
    """The dataset version to train or evaluate on (newest when ``version`` is None), with its manifest and the
    manifest's sha256. Raises ``DatasetError`` (one line, what to do) when there is none or it is damaged."""
    store = storage.resolve_store(store)
    if version is None:
        latest = latest_dataset_version(store, name)
        if latest is None:
            raise DatasetError(
                f"no dataset {name!r} in store {store}: shard one first (`hvt shard ... --name {name}`)"
            )
        version = latest.version
    path = storage.join(store, "datasets", name, version)
    manifest_url = storage.join(path, "manifest.json")
    if not storage.exists(manifest_url):
        raise DatasetError(f"dataset {name} version {version} has no manifest at {manifest_url}; re-run sharding")
    raw = storage.read_bytes(manifest_url)
    try:
        manifest = json.loads(raw)
    except ValueError as err:
        raise DatasetError(f"dataset {name} version {version}: {manifest_url} is damaged ({err}); re-run sharding "
                            "or run `hvt store check`") from None
    return DatasetRef(name, version, path, manifest, hashlib.sha256(raw).hexdigest())
