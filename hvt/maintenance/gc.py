"""`hvt store gc`: retention. Remove old training runs and dataset versions that nothing needs.

What is kept, whatever the numbers say (when in doubt, keep):

- every dataset version that a registered version names: its lineage (``dataset`` + ``dataset_version``, the
  manifest's sha256) or anything in its record that names ``<name>/<version>``, ``<name>@<version>`` or the run-name
  form ``<name>-<version>`` (an evaluation set, a pinned set, a warm start): re-evaluating or reproducing a model
  needs its data. Registered versions themselves are never touched: each holds its own copy of the weights.
- the newest ``keep_dataset_versions`` (at least 1) committed versions of each dataset, any version pinned by the
  caller, any version a running run trains on, and any version whose shards another kept version's manifest points
  at. A version without a manifest (being written, or left by a killed `hvt shard`) is not gc's: `hvt store check
  --repair` handles leftovers.
- the run folder of every alias target (``champion``), the newest ``keep_runs`` runs, and every running run.

A run is running while its lease is live (``hvt.maintenance.lease``: ``run_training`` renews it every minute) or
while anything in its folder was written less than ``grace_s`` ago (Ray writes every checkpoint there; this also
covers runs started by code that takes no lease, and a run being evaluated right after training).

Concurrent writers: decisions are made from one snapshot of the store, and each folder is removed only if it is
unchanged since, checked again right before (and, locally, after an atomic move out of the way):
``hvt.maintenance.removal``. A run that starts while gc runs keeps its files. gc refuses to run (nothing removed)
while a registry record cannot be read, since it could not tell what that version needs.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from hvt import registry, storage
from hvt.errors import InputError
from hvt.ingest.versions import MANIFEST, VERSION_FILE, list_dataset_versions
from hvt.maintenance.lease import DEFAULT_TTL_S, lease_holder, live_leases, runs_root
from hvt.maintenance.removal import FolderSnapshot, remove_folder, snapshot_folder
from hvt.maintenance.store_check import DEFAULT_GRACE_S

log = logging.getLogger(__name__)

DEFAULT_KEEP_RUNS = 3
DEFAULT_KEEP_DATASET_VERSIONS = 2
RAY_SNAPSHOT = "checkpoint_manager_snapshot.json"


class GcError(InputError):
    """gc cannot decide safely (bad arguments, an unreadable registry record); nothing was removed."""


@dataclass
class GcItem:
    kind: str  # "run" | "dataset"
    path: str
    reason: str  # why it is kept, or why it may go
    bytes: int = 0
    files: int = 0


@dataclass
class GcReport:
    store: str
    dry_run: bool
    keep_runs: int
    keep_dataset_versions: int
    grace_s: float
    removed: list[GcItem] = field(default_factory=list)  # with dry_run: what would be removed
    kept: list[GcItem] = field(default_factory=list)

    @property
    def bytes_freed(self) -> int:
        return sum(item.bytes for item in self.removed)

    def as_dict(self) -> dict[str, Any]:
        return {"store": self.store, "dry_run": self.dry_run, "keep_runs": self.keep_runs,
                "keep_dataset_versions": self.keep_dataset_versions, "grace_s": self.grace_s,
                "bytes_freed": self.bytes_freed, "removed": [asdict(i) for i in self.removed],
                "kept": [asdict(i) for i in self.kept]}


@dataclass(frozen=True)
class _Version:
    """What one registry version's record says, flattened to its strings."""

    label: str  # "model v3"
    aliases: tuple[str, ...]  # the aliases pointing at it
    strings: frozenset[str]


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _registry_versions(store: str) -> list[_Version]:
    """Every registered version with the aliases on it; :class:`GcError` when any record or alias is unreadable."""
    problems: list[str] = []
    found = []
    for model in registry.list_models(store):
        versions = registry.list_versions(store, model, problems=problems)
        aliases: dict[str, list[str]] = {}
        alias_dir = storage.join(registry.registry_root(store), model, "aliases")
        for name in storage.listdir(alias_dir):
            if name.endswith(".json") and storage.TEMP_MARK not in name:
                try:
                    target = registry.get_alias(store, model, name.removesuffix(".json"))
                except registry.RegistryError as err:
                    problems.append(str(err))
                    continue
                if target:
                    aliases.setdefault(target, []).append(name.removesuffix(".json"))
        for v in versions:
            strings = frozenset(_strings([v.lineage, v.metrics]))
            found.append(_Version(f"{model} {v.version}", tuple(sorted(aliases.get(v.version, []))), strings))
    if problems:
        raise GcError(f"gc removed nothing: {problems[0]}. What that version needs cannot be known; fix or inspect "
                      "it (`hvt store check`), then re-run")
    return found


def _registration_in_progress(store: str, grace_s: float) -> str | None:
    """A registration whose record is not written yet (its lineage unknown), younger than ``grace_s``."""
    for model in registry.list_models(store):
        mdir = storage.join(registry.registry_root(store), model)
        pending = [storage.join(mdir, registry.STAGING, s) for s in storage.listdir(storage.join(mdir, registry.STAGING))]
        pending += [storage.join(mdir, n) for n in storage.listdir(mdir)
                    if registry._VERSION_RE.match(n) and not storage.exists(storage.join(mdir, n, registry.RECORD))]
        for url in pending:
            newest = snapshot_folder(url).newest
            if newest is None or time.time() - newest < grace_s:
                return url
    return None


def _names_dataset(strings: Iterable[str], name: str, version: str, manifest_sha: str) -> bool:
    strings = set(strings)
    if manifest_sha in strings or (name in strings and version in strings):
        return True
    forms = (f"{name}/{version}", f"{name}@{version}", f"{name}-{version}")
    return any(form in s for s in strings for form in forms)


def _names_run(strings: Iterable[str], run: str) -> bool:
    return any(s == run or s.rstrip("/").endswith(f"runs/{run}") or f"runs/{run}/" in s for s in strings)


def _age(snapshot: FolderSnapshot) -> float | None:
    return None if snapshot.newest is None else max(0.0, time.time() - snapshot.newest)


def _parse_pins(pins: Sequence[str]) -> list[tuple[str, str]]:
    parsed = []
    for pin in pins:
        name, at, version = pin.partition("@")
        if not (name and at and version):
            raise GcError(f"--keep-dataset {pin!r}: expected NAME@VERSION (e.g. kinetics@v-0123456789ab)")
        parsed.append((name, version))
    return parsed


def collect_garbage(
    store: str | None,
    *,
    keep_runs: int = DEFAULT_KEEP_RUNS,
    keep_dataset_versions: int = DEFAULT_KEEP_DATASET_VERSIONS,
    keep_datasets: Sequence[str] = (),
    grace_s: float = DEFAULT_GRACE_S,
    lease_ttl_s: float = DEFAULT_TTL_S,
    dry_run: bool = False,
) -> GcReport:
    """Remove the runs and dataset versions of ``store`` that nothing needs (see the module docstring); with
    ``dry_run``, remove nothing and report what would go. ``keep_datasets``: ``NAME@VERSION`` pins to keep as
    well (e.g. a pinned evaluation set). Raises :class:`GcError` (nothing removed) for bad arguments or an
    unreadable registry."""
    if keep_runs < 0:
        raise GcError(f"--keep-runs {keep_runs}: must be 0 or more")
    if keep_dataset_versions < 1:
        raise GcError(f"--keep-dataset-versions {keep_dataset_versions}: must be 1 or more (the newest version of "
                      "each dataset is always kept)")
    if grace_s < 0:
        raise GcError(f"--grace {grace_s}: must be 0 or more seconds")
    store = storage.resolve_store(store)
    storage.get_fs(store)[0].invalidate_cache()
    pins = _parse_pins(keep_datasets)
    report = GcReport(store, dry_run, keep_runs, keep_dataset_versions, grace_s)
    versions = _registry_versions(store)
    pending = _registration_in_progress(store, grace_s)
    leases = live_leases(store, lease_ttl_s)

    runs, running = _plan_runs(store, report, versions, leases, pending, grace_s, lease_ttl_s)
    datasets = _plan_datasets(store, report, versions, pins, running, leases, pending, grace_s)
    for kind, snapshot, reason, first in runs + datasets:
        item = GcItem(kind, snapshot.url, reason, snapshot.size, len(snapshot.files))
        if dry_run:
            report.removed.append(item)
            continue
        needed = _still_needed_run(store, snapshot.url, lease_ttl_s) if kind == "run" else \
            _still_needed_dataset(store, snapshot.url, lease_ttl_s)
        outcome = remove_folder(store, snapshot, still_needed=needed, first=first)
        if outcome.removed:
            item.reason += f" ({outcome.note})" if outcome.note else ""
            report.removed.append(item)
            log.debug("gc: removed %s %s (%d bytes): %s", kind, snapshot.url, item.bytes, item.reason)
        else:
            why = f"written to while gc ran: {outcome.note}" if outcome.contended else outcome.note
            report.kept.append(GcItem(kind, snapshot.url, why, item.bytes, item.files))
            log.warning("gc: kept %s %s: %s", kind, snapshot.url, outcome.note)
    log.info("gc of %s: %s %d folder(s), %d bytes; kept %d", store, "would remove" if dry_run else "removed",
             len(report.removed), report.bytes_freed, len(report.kept))
    return report


Plan = list[tuple[str, FolderSnapshot, str, tuple[str, ...]]]  # kind, folder, why it may go, delete-first names


def _plan_runs(
    store: str, report: GcReport, versions: list[_Version], leases: dict[str, dict[str, Any]], pending: str | None,
    grace_s: float, ttl_s: float,
) -> tuple[Plan, list[str]]:
    """Which runs may go, and the names of the runs that are running."""
    root = runs_root(store)
    fs, path = storage.get_fs(root)
    try:
        entries = storage.retrying(lambda: fs.ls(path, detail=True), root, "listing")
    except FileNotFoundError:
        entries = []
    # run folders only: dot-names are gc's and pre-flight's own (leases, probes), plain files are not runs
    names = sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory")
    snapshots = [snapshot_folder(storage.join(root, name)) for name in names if not name.startswith(".")]
    snapshots.sort(key=lambda s: s.newest or float("inf"), reverse=True)  # newest first; unknown age counts as new
    plan: Plan = []
    running: list[str] = []
    for rank, snapshot in enumerate(snapshots):
        run = snapshot.url.rstrip("/").rsplit("/", 1)[-1]
        age = _age(snapshot)
        holders = [v for v in versions if v.aliases and _names_run(v.strings, run)]
        if run in leases:
            reason = f"running: its lease is held ({lease_holder(store, run, ttl_s) or 'just released'})"
            running.append(run)
        elif age is None or age < grace_s:
            reason = f"running or just finished: written {age or 0:.0f}s ago, within the grace period of {grace_s:.0f}s"
            running.append(run)
        elif holders:
            reason = "lineage of " + ", ".join(f"{v.label} ({'/'.join(v.aliases)})" for v in holders)
        elif rank < report.keep_runs:
            reason = f"one of the {report.keep_runs} newest runs"
        elif pending:
            reason = f"a registration is in progress at {pending} and its lineage cannot be read yet"
        else:
            registered = [v.label for v in versions if _names_run(v.strings, run)]
            why = f"last written {age / 3600:.1f} h ago, not among the {report.keep_runs} newest runs, no alias on it"
            if registered:
                why += f"; registered as {', '.join(registered)} (the registry holds its own copy of the weights)"
            plan.append(("run", snapshot, why, (RAY_SNAPSHOT,)))
            continue
        report.kept.append(GcItem("run", snapshot.url, reason, snapshot.size, len(snapshot.files)))
    return plan, running


def _plan_datasets(
    store: str, report: GcReport, versions: list[_Version], pins: list[tuple[str, str]], running: list[str],
    leases: dict[str, dict[str, Any]], pending: str | None, grace_s: float,
) -> Plan:
    """Which committed dataset versions may go."""
    plan: Plan = []
    root = storage.join(store, "datasets")
    committed = {name: list_dataset_versions(store, name) for name in storage.listdir(root) if not name.startswith(".")}
    for name, version in pins:
        if version not in {v.version for v in committed.get(name, [])}:
            raise GcError(f"--keep-dataset {name}@{version}: no committed version {version!r} of dataset {name!r} "
                          f"in {store}; nothing removed (check the name with `hvt registry` / the store)")
    for name, found in committed.items():
        kept: dict[str, str] = {}
        shas: dict[str, str] = {}
        snapshots = {v.version: snapshot_folder(v.path) for v in found}
        ingesting = _ingest_in_progress(storage.join(root, name), {v.version for v in found}, grace_s)
        for rank, v in enumerate(reversed(found)):  # newest first
            age = _age(snapshots[v.version])
            if age is None or age < grace_s:
                kept[v.version] = f"written {age or 0:.0f}s ago, within the grace period of {grace_s:.0f}s"
                continue
            if ingesting:  # an incremental ingest may read any earlier version as its base
                kept[v.version] = f"an ingest of {name} is in progress ({ingesting} has no manifest yet)"
                continue
            try:
                shas[v.version] = hashlib.sha256(storage.read_bytes(v.manifest_url)).hexdigest()
            except (FileNotFoundError, OSError) as err:
                kept[v.version] = f"its manifest cannot be read ({err})"
                continue
            reason = _dataset_keep_reason(name, v.version, shas[v.version], rank, report.keep_dataset_versions,
                                          versions, pins, running, leases)
            if reason:
                kept[v.version] = reason
            elif pending:
                kept[v.version] = f"a registration is in progress at {pending} and its lineage cannot be read yet"
        _keep_referenced_shards(found, kept)
        for v in found:
            snapshot = snapshots[v.version]
            if v.version in kept:
                report.kept.append(GcItem("dataset", v.path, kept[v.version], snapshot.size, len(snapshot.files)))
            else:
                why = (f"older than the {report.keep_dataset_versions} newest versions of {name}; no registered "
                       "version, pin or running run names it")
                plan.append(("dataset", snapshot, why, (MANIFEST, VERSION_FILE)))
    return plan


def _ingest_in_progress(folder: str, committed: set[str], grace_s: float) -> str | None:
    """A version of this dataset being written (no manifest yet) and written to within ``grace_s``."""
    for version in storage.listdir(folder):
        if version in committed or version.startswith("."):
            continue
        age = _age(snapshot_folder(storage.join(folder, version)))
        if age is not None and age < grace_s:  # None: an object store's empty "folder" holds nothing
            return version
    return None


def _dataset_keep_reason(
    name: str, version: str, sha: str, rank: int, keep: int, versions: list[_Version],
    pins: list[tuple[str, str]], running: list[str], leases: dict[str, dict[str, Any]],
) -> str | None:
    users = [v.label for v in versions if _names_dataset(v.strings, name, version, sha)]
    if users:
        return "lineage of " + ", ".join(users)
    if rank < keep:
        return "the newest version" if rank == 0 else f"one of the {keep} newest versions"
    if (name, version) in pins:
        return "pinned (--keep-dataset)"
    trains = [run for run in running if f"--{name}-{version}--" in run or
              (leases.get(run, {}).get("dataset"), leases.get(run, {}).get("dataset_version")) == (name, version)]
    if trains:
        return f"used by running run {trains[0]}"
    return None


def _keep_referenced_shards(found: list[Any], kept: dict[str, str]) -> None:
    """Keep versions whose files a kept version's manifest points at (a shard path outside its own folder)."""
    changed = True
    while changed:
        changed = False
        for v in found:
            if v.version not in kept:
                continue
            try:
                manifest = storage.read_json(v.manifest_url)
            except (FileNotFoundError, storage.DamagedFileError):
                continue
            paths = set(_strings(manifest.get("splits", {})))
            for other in found:
                if other.version not in kept and any(f"{other.version}/" in p for p in paths):
                    kept[other.version] = f"{v.version}'s manifest points at its shards"
                    changed = True


def _still_needed_run(store: str, url: str, ttl_s: float) -> Any:
    run = url.rstrip("/").rsplit("/", 1)[-1]

    def check() -> str | None:
        holder = lease_holder(store, run, ttl_s)
        return f"a run took its lease ({holder})" if holder else None

    return check


def _still_needed_dataset(store: str, url: str, ttl_s: float) -> Any:
    name, version = url.rstrip("/").rsplit("/", 2)[-2:]

    def check() -> str | None:
        for run, record in live_leases(store, ttl_s).items():
            if f"--{name}-{version}--" in run or (record.get("dataset"), record.get("dataset_version")) == (name, version):
                return f"run {run} started on it"
        return None

    return check
