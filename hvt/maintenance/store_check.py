"""`hvt store check`: is every promise of the store kept? Datasets (manifest, shard sha256s and sample counts,
quarantine file, commit record) and registry versions (checkpoint sha256s, records, aliases), plus what killed
writers leave behind (temporary files, staging folders, unfinished claims, unfinished dataset versions).

``repair`` removes only what is safe to remove — leftovers that no committed object refers to and that are older
than ``grace_s`` (so that a writer still running is left alone) — and rewrites a dataset commit record from its
manifest. It never deletes a committed shard or a registered version's files: damage there is reported, with
what to do, and the store stays unhealthy until it is fixed.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from hvt import registry, storage
from hvt.integrity import check_shard, manifest_problems

DEFAULT_GRACE_S = 3600.0
PROBE_FOLDER = ".hvt-probe"


@dataclass
class Finding:
    """One thing that is not as promised. ``repair`` is what ``--repair`` may do about it ("" = nothing)."""

    kind: str  # damaged | missing | unfinished | leftover | orphan | mismatch
    path: str
    detail: str
    repair: str = ""
    repaired: str = ""  # what --repair did ("" = not done)
    age_s: float | None = None
    resolved: bool = False  # True once the repair made the problem go away (not just prepared its fix)


@dataclass
class StoreReport:
    store: str
    datasets: int = 0  # committed dataset versions checked
    shards: int = 0
    versions: int = 0  # registry versions checked
    findings: list[Finding] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return all(f.resolved for f in self.findings)

    def as_dict(self) -> dict[str, Any]:
        return {"store": self.store, "healthy": self.healthy, "datasets": self.datasets, "shards": self.shards,
                "registry_versions": self.versions, "findings": [asdict(f) for f in self.findings]}


def _age_s(fs: Any, path: str) -> float | None:
    """Seconds since ``path`` (or, for a folder, the newest file in it) was last modified."""
    try:
        infos = [fs.info(path)]
        if infos[0].get("type") == "directory":
            infos = list(fs.find(path, detail=True).values()) or infos
    except FileNotFoundError:
        return None
    newest = None
    for info in infos:
        stamp = info.get("mtime") or info.get("LastModified") or info.get("created")
        if hasattr(stamp, "timestamp"):
            stamp = stamp.timestamp()
        if stamp is not None:
            newest = max(newest or 0.0, float(stamp))
    return None if newest is None else max(0.0, time.time() - newest)


class _Checker:
    def __init__(self, store: str, *, repair: bool, grace_s: float) -> None:
        self.store = storage.resolve_store(store)
        self.fs, _ = storage.get_fs(self.store)
        self.repair = repair
        self.grace_s = grace_s
        self.report = StoreReport(self.store)

    # ------------------------------------------------------------------ helpers
    def _path(self, url: str) -> str:
        return storage.get_fs(url)[1]

    def find(
        self, kind: str, url: str, detail: str, repair: str = "", action: Any = None, *, resolves: bool = True
    ) -> None:
        """Record a finding; with ``--repair``, run ``action`` when it is old enough to be nobody's work."""
        age = _age_s(self.fs, self._path(url)) if repair else None
        finding = Finding(kind, url, detail, repair, age_s=None if age is None else round(age, 1))
        if self.repair and action is not None:
            if age is not None and age < self.grace_s:
                finding.repaired = ""
                finding.detail += f" (left alone: modified {age:.0f}s ago, within --grace {self.grace_s:.0f}s; a " \
                                  "writer may still be running)"
            else:
                action()
                finding.repaired = repair
                finding.resolved = resolves
        self.report.findings.append(finding)

    def remove(self, url: str) -> Any:
        return lambda: storage.remove(url, recursive=True)

    def listing(self, url: str) -> list[dict]:
        try:
            return storage.retrying(lambda: self.fs.ls(self._path(url), detail=True), url, "listing")
        except FileNotFoundError:
            return []

    def holds_files(self, url: str) -> bool:
        """False for a folder with no file in it (object stores may keep an empty "folder" marker after its
        objects were removed: it holds nothing, so it is neither a version nor a leftover)."""
        _, path = storage.get_fs(url)
        found = storage.retrying(lambda: self.fs.find(path), url, "listing")
        return any(not name.endswith("/") and name.rstrip("/") != path.rstrip("/") for name in found)

    def temp_leftovers(self, folder: str, entries: list[dict]) -> None:
        for info in entries:
            name = posixpath.basename(info["name"].rstrip("/"))
            if storage.TEMP_MARK in name:
                url = storage.join(folder, name)
                self.find("leftover", url, "temporary file of an interrupted write", "removed", self.remove(url))

    # ------------------------------------------------------------------ datasets
    def datasets(self) -> None:
        root = storage.join(self.store, "datasets")
        for name in storage.listdir(root):
            for version in storage.listdir(storage.join(root, name)):
                url = storage.join(root, name, version)
                if self.fs.isdir(self._path(url)):
                    self.dataset_version(url)

    def dataset_version(self, url: str) -> None:
        if not self.holds_files(url):
            return
        entries = self.listing(url)
        names = {posixpath.basename(i["name"].rstrip("/")) for i in entries}
        self.temp_leftovers(url, entries)
        if "manifest.json" not in names:
            self.find("unfinished", url, "dataset version without manifest.json (an interrupted `hvt shard`; re-run "
                      "the same command to finish it)", "removed", self.remove(url))
            return
        manifest_url = storage.join(url, "manifest.json")
        manifest_bytes = storage.read_bytes(manifest_url)
        try:
            manifest = json.loads(manifest_bytes)
        except ValueError as err:
            self.find("damaged", manifest_url, f"not valid JSON ({err}); re-run the same `hvt shard` to rewrite it")
            return
        self.report.datasets += 1
        record_url = storage.join(url, "version.json")
        sha = hashlib.sha256(manifest_bytes).hexdigest()
        record_problem = ""
        try:
            storage.read_json(record_url)
        except FileNotFoundError:
            record_problem = "missing (the commit was interrupted after the manifest)"
        except storage.DamagedFileError as err:
            record_problem = err.problem
        if record_problem:
            from hvt.ingest.versions import commit_version

            def rewrite() -> None:
                storage.remove(record_url)
                commit_version(url, manifest.get("name", ""), manifest.get("version", ""), sha)

            self.find("damaged", record_url, f"commit record {record_problem}", "rewritten from the manifest", rewrite)
        for problem in manifest_problems(url, manifest_bytes):
            if "version.json" not in problem or not record_problem:
                self.find("mismatch", manifest_url, f"{problem}; re-run the same `hvt shard` to rewrite it")
        listed: set[str] = set()
        for split, info in sorted(manifest.get("splits", {}).items()):
            for entry in info.get("shards", []):
                listed.add(entry["path"])
                self.report.shards += 1
                problem = check_shard(url, entry)
                if problem:
                    stats_url = storage.join(url, entry["path"].removesuffix(".tar") + ".stats.json")
                    self.find("damaged", storage.join(url, entry["path"]), f"{split} shard {problem}; after "
                              "--repair, re-run the same `hvt shard` to rewrite it", "removed its .stats.json so "
                              "that `hvt shard` rewrites it", self.remove(stats_url), resolves=False)
        self.quarantine(url, manifest)
        for info in entries:
            name = posixpath.basename(info["name"].rstrip("/"))
            if name.endswith(".tar") and name not in listed and storage.TEMP_MARK not in name:
                orphan = storage.join(url, name)
                self.find("orphan", orphan, "shard not listed in the manifest", "removed", self.remove(orphan))

    def quarantine(self, url: str, manifest: dict) -> None:
        expected = (manifest.get("quarantine") or {}).get("sha256")
        if not expected:
            return
        q_url = storage.join(url, manifest["quarantine"].get("file", "quarantine.jsonl"))
        try:
            actual = hashlib.sha256(storage.read_bytes(q_url)).hexdigest()
        except FileNotFoundError:
            self.find("missing", q_url, "quarantine list is missing; re-run the same `hvt shard` to rewrite it")
            return
        if actual != expected:
            self.find("damaged", q_url, f"sha256 {actual[:12]}… is not the manifest's {expected[:12]}…; re-run the "
                      "same `hvt shard` to rewrite it")

    # ------------------------------------------------------------------ registry
    def registry(self) -> None:
        for model in registry.list_models(self.store):
            mdir = storage.join(registry.registry_root(self.store), model)
            entries = self.listing(mdir)
            for info in entries:
                name = posixpath.basename(info["name"].rstrip("/"))
                url = storage.join(mdir, name)
                if name == registry.STAGING:
                    for staged in storage.listdir(url):
                        leftover = storage.join(url, staged)
                        if not self.holds_files(leftover) and not storage.is_local(leftover):
                            continue
                        self.find("leftover", leftover, "staged registration that never got a version number "
                                  "(the writer was interrupted)", "removed", self.remove(leftover))
                elif registry._VERSION_RE.match(name):
                    self.version(model, url)
                elif storage.TEMP_MARK in name:
                    self.find("leftover", url, "temporary file of an interrupted write", "removed", self.remove(url))
            self.aliases(model, mdir)

    def version(self, model: str, vdir: str) -> None:
        if not self.holds_files(vdir):
            if storage.is_local(vdir):  # an empty folder would make registrations skip its number
                self.find("leftover", vdir, "empty version folder", "removed", self.remove(vdir))
            return
        entries = self.listing(vdir)
        self.temp_leftovers(vdir, entries)
        record_url = storage.join(vdir, registry.RECORD)
        try:
            version = registry.read_record(vdir)
        except registry.RegistryError as err:
            empty = not storage.read_bytes(record_url).strip()
            if empty:  # an old writer's exclusive create that was never filled: the registration never finished
                self.find("unfinished", vdir, "version.json is empty: the registration was interrupted before its "
                          "record was written, so this version never existed", "removed", self.remove(vdir))
            else:
                self.find("damaged", record_url, f"{err}; the version cannot be verified (restore the record or "
                          "remove the folder by hand)")
            return
        if version is None:
            self.find("unfinished", vdir, "claimed version folder without version.json (the writer was interrupted "
                      "before committing it)", "removed", self.remove(vdir))
            return
        self.report.versions += 1
        for problem in registry.verify_version(version):
            self.find("damaged", vdir, f"{problem}; do not use this version (re-register the model)")
        known = set(version.files) | {registry.RECORD, registry.CLAIM}
        for info in entries:
            name = posixpath.basename(info["name"].rstrip("/"))
            if name not in known and storage.TEMP_MARK not in name:
                url = storage.join(vdir, name)
                self.find("orphan", url, "file not listed in the version record", "removed", self.remove(url))

    def aliases(self, model: str, mdir: str) -> None:
        folder = storage.join(mdir, "aliases")
        entries = self.listing(folder)
        self.temp_leftovers(folder, entries)
        for info in entries:
            name = posixpath.basename(info["name"].rstrip("/"))
            if not name.endswith(".json") or storage.TEMP_MARK in name:
                continue
            alias = name.removesuffix(".json")
            url = storage.join(folder, name)
            try:
                target = registry.get_alias(self.store, model, alias)
                version = registry.get_version(self.store, model, target) if target else None
            except registry.RegistryError as err:
                self.find("damaged", url, f"{err}")
                continue
            if version is not None and registry.verify_version(version):
                self.find("mismatch", url, f"alias {alias} points at {model} {target}, which does not verify; "
                          "promote a good version (`hvt registry promote --force`)")

    def maintenance_leftovers(self) -> None:
        """What gc and training leave only when killed: folders gc moved aside but did not finish removing, and
        run leases whose driver died (a live lease is younger than the grace period, so --repair leaves it)."""
        from hvt.maintenance.lease import LEASE_FOLDER
        from hvt.maintenance.removal import TRASH_FOLDER

        trash = storage.join(self.store, TRASH_FOLDER)
        for info in self.listing(trash):
            url = storage.join(trash, posixpath.basename(info["name"].rstrip("/")))
            self.find("leftover", url, "folder `hvt store gc` moved aside to remove (gc was interrupted, or kept it "
                      "because a writer re-created its name: see gc's output)", "removed", self.remove(url))
        leases = storage.join(self.store, "runs", LEASE_FOLDER)
        for info in self.listing(leases):
            url = storage.join(leases, posixpath.basename(info["name"].rstrip("/")))
            age = _age_s(self.fs, self._path(url))
            if age is not None and age >= self.grace_s:
                self.find("leftover", url, "lease of a training run that ended without releasing it", "removed",
                          self.remove(url))

    def probes(self) -> None:
        if storage.is_local(self.store):
            return
        bucket = self._path(self.store).split("/", 1)[0]
        for info in self.listing(f"s3://{bucket}/{PROBE_FOLDER}"):
            if info.get("type") == "directory" or info["name"].endswith("/"):
                continue  # an empty folder marker
            url = "s3://" + info["name"]
            self.find("leftover", url, "conditional-write probe object", "removed", self.remove(url))


def check_store(store: str, *, repair: bool = False, grace_s: float = DEFAULT_GRACE_S) -> StoreReport:
    """Check every dataset version and registry version in ``store``; with ``repair``, remove leftovers older
    than ``grace_s`` seconds and rewrite missing dataset commit records. See the module docstring."""
    checker = _Checker(store, repair=repair, grace_s=grace_s)
    checker.fs.invalidate_cache()
    checker.datasets()
    checker.registry()
    checker.maintenance_leftovers()
    checker.probes()
    return checker.report

