"""Model registry kept in the store: immutable, checksummed versions with lineage, and aliases.

Layout::

    {store}/registry/<model>/v<N>/model.pt        weights + model config + class names (weights_only-loadable)
                                  metrics.json    evaluation metrics
                                  report.md       human-readable report (+ any plots beside it)
                                  version.json    written LAST: sha256 of every file, lineage; its presence
                                                  is what makes the version exist
    {store}/registry/<model>/aliases/<alias>.json   {"version": "v3", ...}

A version is never rewritten: ``version.json`` is created exclusively and a writer that finds the number taken
moves on to the next one. Loading verifies the sha256 before ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from hvt import storage

log = logging.getLogger(__name__)

CHAMPION = "champion"
_VERSION_RE = re.compile(r"^v(\d+)$")


class RegistryError(RuntimeError):
    """A registry operation cannot be done; the message names the model/version and what to do."""


@dataclass(frozen=True)
class RegistryVersion:
    model: str
    version: str
    path: str
    metrics: dict[str, Any]
    files: dict[str, str]
    lineage: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "path": self.path,
            "metrics": self.metrics,
            "files": self.files,
            "lineage": self.lineage,
            "created_at": self.created_at,
        }


def registry_root(store: str) -> str:
    return storage.join(storage.resolve_store(store), "registry")


def _model_dir(store: str, model: str) -> str:
    if not model or "/" in model or model.startswith("."):
        raise RegistryError(f"registry model name {model!r} is not a plain name")
    return storage.join(registry_root(store), model)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _version_numbers(store: str, model: str) -> list[int]:
    numbers = []
    for name in storage.listdir(_model_dir(store, model)):
        match = _VERSION_RE.match(name)
        if match:
            numbers.append(int(match.group(1)))
    return sorted(numbers)


def register_version(
    store: str,
    model: str,
    *,
    files: dict[str, bytes],
    metrics: dict[str, Any],
    lineage: dict[str, Any],
    created_at: str,
) -> RegistryVersion:
    """Add a new immutable version holding ``files`` (must include ``model.pt``); return it."""
    if "model.pt" not in files:
        raise RegistryError("a registry version needs a 'model.pt' file")
    reserved = {"version.json", "metrics.json"} & set(files)
    if reserved:
        raise RegistryError(f"file names {sorted(reserved)} are reserved by the registry")
    payload = dict(files)
    payload["metrics.json"] = (json.dumps(metrics, indent=2, sort_keys=True) + "\n").encode()
    checksums = {name: sha256_bytes(data) for name, data in sorted(payload.items())}
    numbers = _version_numbers(store, model)
    number = (numbers[-1] if numbers else 0) + 1
    for _attempt in range(100):
        version = f"v{number}"
        vdir = storage.join(_model_dir(store, model), version)
        if storage.exists(storage.join(vdir, "version.json")):
            number += 1
            continue
        for name, data in sorted(payload.items()):
            storage.write_bytes(storage.join(vdir, name), data)
        record = {
            "model": model,
            "version": version,
            "files": checksums,
            "metrics": metrics,
            "lineage": lineage,
            "created_at": created_at,
        }
        blob = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
        if storage.create_exclusive(storage.join(vdir, "version.json"), blob):
            log.info("registered %s %s at %s", model, version, vdir)
            return _version_from_record(record, vdir)
        number += 1
    raise RegistryError(f"could not find a free version number for {model!r}")


def _version_from_record(record: dict[str, Any], path: str) -> RegistryVersion:
    return RegistryVersion(
        model=record["model"],
        version=record["version"],
        path=path,
        metrics=record.get("metrics", {}),
        files=record.get("files", {}),
        lineage=record.get("lineage", {}),
        created_at=record.get("created_at", ""),
    )


def list_models(store: str) -> list[str]:
    return [name for name in storage.listdir(registry_root(store)) if not name.startswith(".")]


def list_versions(store: str, model: str | None = None) -> list[RegistryVersion]:
    """All complete versions (those with ``version.json``), oldest first, of one model or of every model."""
    models = [model] if model else list_models(store)
    versions: list[RegistryVersion] = []
    for name in models:
        for number in _version_numbers(store, name):
            vdir = storage.join(_model_dir(store, name), f"v{number}")
            record_url = storage.join(vdir, "version.json")
            if storage.exists(record_url):
                versions.append(_version_from_record(storage.read_json(record_url), vdir))
    return versions


def get_alias(store: str, model: str, alias: str = CHAMPION) -> str | None:
    url = storage.join(_model_dir(store, model), "aliases", f"{alias}.json")
    if not storage.exists(url):
        return None
    return storage.read_json(url)["version"]


def set_alias(store: str, model: str, version: str, alias: str = CHAMPION, *, reason: str = "") -> None:
    """Point ``alias`` at ``version`` (atomic replace of one small file)."""
    get_version(store, model, version)  # must exist
    url = storage.join(_model_dir(store, model), "aliases", f"{alias}.json")
    storage.write_json(url, {"alias": alias, "version": version, "reason": reason})


def beats(candidate: dict[str, Any], champion: dict[str, Any]) -> tuple[bool, str]:
    """Whether metrics ``candidate`` beat ``champion``'s: higher val top-1 on the same evaluation set (same
    manifest hash and split). Returns the decision and a one-line reason."""
    same_set = candidate.get("eval_manifest_sha256") == champion.get("eval_manifest_sha256") and candidate.get(
        "eval_split"
    ) == champion.get("eval_split")
    if not same_set:
        return False, "champion was evaluated on a different evaluation set; not comparable, not promoted"
    new, old = float(candidate.get("val_top1", 0.0)), float(champion.get("val_top1", 0.0))
    if new > old:
        return True, f"val_top1 {new:.4f} > champion's {old:.4f}"
    return False, f"val_top1 {new:.4f} does not beat champion's {old:.4f}"


def promote(store: str, model: str, version: str, *, alias: str = CHAMPION, force: bool = False) -> str:
    """Point ``alias`` at ``version`` if it beats the version the alias points at now (see ``beats``), or
    unconditionally with ``force``. Returns the reason recorded with the alias; raises ``RegistryError`` when
    refused."""
    candidate = get_version(store, model, version)
    current_ref = get_alias(store, model, alias)
    if current_ref is None:
        reason = f"no {alias} yet"
    elif current_ref == candidate.version:
        return f"{alias} already is {candidate.version}"
    else:
        current = get_version(store, model, current_ref)
        better, reason = beats(candidate.metrics, current.metrics)
        if not better and not force:
            raise RegistryError(
                f"{model} {candidate.version} does not replace {alias} {current_ref}: {reason}. "
                "Pass --force (force=True) to promote it anyway."
            )
    if force:
        reason = f"forced by hand ({reason})"
    set_alias(store, model, candidate.version, alias=alias, reason=reason)
    return reason


def get_version(store: str, model: str, ref: str = CHAMPION) -> RegistryVersion:
    """Resolve ``ref`` (``vN``, ``latest`` or an alias such as ``champion``) to a version."""
    if ref == "latest":
        versions = list_versions(store, model)
        if not versions:
            raise RegistryError(f"model {model!r} has no versions in {registry_root(store)}")
        return versions[-1]
    version = ref if _VERSION_RE.match(ref) else get_alias(store, model, ref)
    if version is None:
        raise RegistryError(
            f"model {model!r} has no alias {ref!r} in {registry_root(store)}; "
            "use a version like v1, 'latest', or promote one first"
        )
    vdir = storage.join(_model_dir(store, model), version)
    record_url = storage.join(vdir, "version.json")
    if not storage.exists(record_url):
        raise RegistryError(f"model {model!r} has no version {version!r} in {registry_root(store)}")
    return _version_from_record(storage.read_json(record_url), vdir)


def read_verified(version: RegistryVersion, name: str) -> bytes:
    """Bytes of one file of a version, refused if its sha256 does not match the record."""
    expected = version.files.get(name)
    if expected is None:
        raise RegistryError(f"{version.model} {version.version} has no file {name!r}")
    data = storage.read_bytes(storage.join(version.path, name))
    actual = sha256_bytes(data)
    if actual != expected:
        raise RegistryError(
            f"{version.model} {version.version}/{name}: sha256 {actual[:12]}… does not match the recorded "
            f"{expected[:12]}…; the file was modified or corrupted. Refusing to load it."
        )
    return data


def load_checkpoint(version: RegistryVersion) -> dict[str, Any]:
    """The verified ``model.pt`` payload (state dict, model config, class names), loaded with weights_only."""
    import io

    data = read_verified(version, "model.pt")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
