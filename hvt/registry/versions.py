"""Registry versions and aliases kept in the store: immutable, checksummed versions with lineage.

Layout::

    {store}/registry/<model>/v<N>/model.pt        weights + model config + class names (weights_only-loadable)
                                  metrics.json    evaluation metrics
                                  report.md       human-readable report (+ any plots beside it)
                                  version.json    sha256 of every file, lineage; its presence is what makes
                                                  the version exist
                                  .claim          (object stores only) who claimed the number, and when
    {store}/registry/<model>/aliases/<alias>.json   {"version": "v3", ...}
    {store}/registry/<model>/.staging/<id>/       (local only) a version being written; renamed to v<N> whole

A version number is claimed once (see docs/ARCHITECTURE.md): locally the complete version folder is staged and
renamed to ``v<N>`` with ``RENAME_NOREPLACE``; on S3 the claim is a conditional PUT (``If-None-Match: *``) of
``v<N>/.claim``, then the files, then ``version.json``. A writer that finds the number taken moves on to the next.
Loading verifies the sha256 before ``torch.load(weights_only=True)``; an alias only moves to a verified version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

from hvt import storage

log = logging.getLogger(__name__)

CHAMPION = "champion"
RECORD = "version.json"
CLAIM = ".claim"
STAGING = ".staging"
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
    """Add a new immutable version holding ``files`` (must include ``model.pt``); return it.

    Safe against concurrent writers on local and S3 stores: each gets its own number. A process killed midway
    leaves no version (local: a ``.staging`` folder; S3: a claimed ``v<N>`` without ``version.json``), which
    ``hvt store check --repair`` removes. Raises :class:`RegistryError` for bad input.
    """
    if "model.pt" not in files:
        raise RegistryError("a registry version needs a 'model.pt' file")
    reserved = {RECORD, "metrics.json", CLAIM} & set(files)
    if reserved:
        raise RegistryError(f"file names {sorted(reserved)} are reserved by the registry")
    bad = [name for name in files if "/" in name or name.startswith(".") or not name]
    if bad:
        raise RegistryError(f"file names {bad} must be plain names")
    payload = dict(files)
    payload["metrics.json"] = (json.dumps(metrics, indent=2, sort_keys=True) + "\n").encode()
    record = {
        "model": model,
        "files": {name: sha256_bytes(data) for name, data in sorted(payload.items())},
        "metrics": metrics,
        "lineage": lineage,
        "created_at": created_at,
    }
    if storage.is_local(_model_dir(store, model)):
        version, vdir = _register_local(store, model, payload, record)
    else:
        version, vdir = _register_object_store(store, model, payload, record)
    log.info("registered %s %s at %s", model, version, vdir)
    return _version_from_record({**record, "version": version}, vdir)


def _record_bytes(record: dict[str, Any], version: str) -> bytes:
    return (json.dumps({**record, "version": version}, indent=2, sort_keys=True) + "\n").encode()


def _next_number(store: str, model: str) -> int:
    numbers = _version_numbers(store, model)
    return (numbers[-1] if numbers else 0) + 1


def _register_local(store: str, model: str, payload: dict[str, bytes], record: dict[str, Any]) -> tuple[str, str]:
    """Stage every file in ``.staging/<id>/``, then rename the folder to the first free ``v<N>`` (no replace)."""
    mdir = _model_dir(store, model)
    _, root = storage.get_fs(mdir)
    staging = os.path.join(root, STAGING, f"{uuid.uuid4().hex}-{os.getpid()}")
    os.makedirs(staging)
    try:
        for name, data in sorted(payload.items()):
            _write_synced(os.path.join(staging, name), data)
        number = _next_number(store, model)
        for _attempt in range(1000):
            version = f"v{number}"
            _write_synced(os.path.join(staging, RECORD), _record_bytes(record, version))
            storage.fault_point("register:staged")
            if storage.rename_no_replace(staging, os.path.join(root, version)):
                storage._fsync_dir(root)
                return version, storage.join(mdir, version)
            number = max(number + 1, _next_number(store, model))
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    raise RegistryError(f"could not find a free version number for {model!r} in {mdir}")


def _write_synced(path: str, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        storage.fault_point("write")
        os.fsync(handle.fileno())


def _register_object_store(
    store: str, model: str, payload: dict[str, bytes], record: dict[str, Any]
) -> tuple[str, str]:
    """Claim the first free ``v<N>`` with a conditional PUT of ``v<N>/.claim``; then one PUT per file; then the
    record (also conditional). The claim stays: it keeps the number taken for good."""
    mdir = _model_dir(store, model)
    fs, _ = storage.get_fs(mdir)
    fs.invalidate_cache()  # listings are cached per process; other processes register too
    claim = {"owner": f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}", "claimed_at": record["created_at"]}

    def next_claimable() -> int:
        # numbers that hold an object; some servers keep an empty "folder" after its objects were removed
        _, root = storage.get_fs(mdir)
        found = storage.retrying(lambda: fs.find(root, maxdepth=2), mdir, "listing")
        objects = [p[len(root):].strip("/") for p in found if not p.endswith("/")]  # "v2/": a folder marker
        used = [int(m.group(1)) for p in objects if "/" in p and (m := _VERSION_RE.match(p.split("/")[0]))]
        return max(used, default=0) + 1

    number = next_claimable()
    for _attempt in range(1000):
        version = f"v{number}"
        vdir = storage.join(mdir, version)
        if storage.create_exclusive(storage.join(vdir, CLAIM), json.dumps({**claim, "version": version}).encode()):
            if storage.exists(storage.join(vdir, RECORD)):  # written before claims existed: taken
                number += 1
                continue
            storage.fault_point("register:claimed")
            for name, data in sorted(payload.items()):
                storage.write_bytes(storage.join(vdir, name), data)
            storage.fault_point("register:files")
            if not storage.create_exclusive(storage.join(vdir, RECORD), _record_bytes(record, version)):
                raise RegistryError(f"{model} {version}: another writer wrote its version.json after our claim; "
                                    "run `hvt store check` to inspect it")
            return version, vdir
        fs.invalidate_cache()
        number = max(number + 1, next_claimable())
    raise RegistryError(f"could not find a free version number for {model!r} in {mdir}")


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


def read_record(vdir: str) -> RegistryVersion | None:
    """The version stored in folder ``vdir``; None when it has no ``version.json`` (unfinished or being written).

    Raises :class:`RegistryError` when the record exists but is damaged (empty, cut short, wrong shape).
    """
    url = storage.join(vdir, RECORD)
    try:
        record = storage.read_json(url)
        version = _version_from_record(record, vdir)
        if not isinstance(version.files, dict) or "model.pt" not in version.files:
            raise KeyError("files.model.pt")
    except FileNotFoundError:
        return None
    except storage.DamagedFileError as err:
        raise RegistryError(f"damaged registry record {err}") from None
    except (KeyError, TypeError, AttributeError) as err:
        raise RegistryError(f"damaged registry record {url}: missing {err}; run `hvt store check --repair`") from None
    return version


def list_models(store: str) -> list[str]:
    return [name for name in storage.listdir(registry_root(store)) if not name.startswith(".")]


def list_versions(
    store: str, model: str | None = None, *, problems: list[str] | None = None
) -> list[RegistryVersion]:
    """All complete versions (those with a readable ``version.json``), oldest first, of one model or of every
    model. Damaged records are skipped with a warning (and appended to ``problems`` when given)."""
    models = [model] if model else list_models(store)
    versions: list[RegistryVersion] = []
    for name in models:
        for number in _version_numbers(store, name):
            vdir = storage.join(_model_dir(store, name), f"v{number}")
            try:
                version = read_record(vdir)
            except RegistryError as err:
                log.warning("skipping %s %s: %s", name, f"v{number}", err)
                if problems is not None:
                    problems.append(str(err))
                continue
            if version is not None:
                versions.append(version)
    return versions


def get_alias(store: str, model: str, alias: str = CHAMPION) -> str | None:
    """The version ``alias`` points at, None when it is not set; :class:`RegistryError` when its file is damaged."""
    url = storage.join(_model_dir(store, model), "aliases", f"{alias}.json")
    try:
        target = storage.read_json(url)["version"]
    except FileNotFoundError:
        return None
    except (storage.DamagedFileError, KeyError, TypeError) as err:
        raise RegistryError(f"damaged alias file {url} ({err}); point it again with `hvt registry promote`") from None
    if not isinstance(target, str) or not _VERSION_RE.match(target):
        raise RegistryError(f"damaged alias file {url}: {target!r} is not a version; point it again with "
                            "`hvt registry promote`")
    return target


def verify_version(version: RegistryVersion) -> list[str]:
    """Problems with a version's files (missing, or sha256 not as recorded); empty when every file verifies."""
    problems = []
    for name, expected in sorted(version.files.items()):
        try:
            actual = sha256_bytes(storage.read_bytes(storage.join(version.path, name)))
        except FileNotFoundError:
            problems.append(f"{version.model} {version.version}/{name} is missing")
            continue
        if actual != expected:
            problems.append(f"{version.model} {version.version}/{name}: sha256 {actual[:12]}… is not the recorded "
                            f"{expected[:12]}…")
    return problems


def set_alias(store: str, model: str, version: str, alias: str = CHAMPION, *, reason: str = "") -> None:
    """Point ``alias`` at ``version`` (one atomic write of a small file), only once every file of the version
    verifies against its recorded sha256; :class:`RegistryError` otherwise."""
    target = get_version(store, model, version)  # must exist
    problems = verify_version(target)
    if problems:
        raise RegistryError(f"{alias} not moved to {model} {version}: " + "; ".join(problems))
    url = storage.join(_model_dir(store, model), "aliases", f"{alias}.json")
    storage.write_json(url, {"alias": alias, "version": version, "reason": reason})


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
    found = read_record(storage.join(_model_dir(store, model), version))
    if found is None:
        raise RegistryError(f"model {model!r} has no version {version!r} in {registry_root(store)}")
    return found


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

    import torch

    data = read_verified(version, "model.pt")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
