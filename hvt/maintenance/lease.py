"""Run leases: how `hvt store gc` tells a training run that is still going from one that ended.

Ray Train writes into ``{store}/runs/<run>/`` only when it saves a checkpoint, so a run in a long epoch can leave
its folder untouched for longer than any sensible grace period. While ``run_training`` drives a run it therefore
holds a lease: the small file ``{store}/runs/.leases/<run>.json``, rewritten every ``heartbeat_s`` seconds and
removed when the run ends. A lease counts as held while its file was written less than ``ttl_s`` seconds ago (the
store's own clock, so the trainer's and gc's clocks need not agree); a driver killed without cleanup leaves a lease
that simply expires. The lease lives beside the run folders rather than inside one, so Ray never sees it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hvt import storage

log = logging.getLogger(__name__)

LEASE_FOLDER = ".leases"
DEFAULT_TTL_S = 900.0
DEFAULT_HEARTBEAT_S = 60.0


def runs_root(store: str) -> str:
    return storage.join(storage.resolve_store(store), "runs")


def lease_url(store: str, run_name: str) -> str:
    return storage.join(runs_root(store), LEASE_FOLDER, f"{run_name}.json")


def modified_at(fs: Any, info: dict[str, Any]) -> float | None:
    """A listing entry's modification time as a UNIX timestamp (local ``mtime``, S3 ``LastModified``)."""
    stamp = info.get("mtime") or info.get("LastModified") or info.get("created")
    if hasattr(stamp, "timestamp"):
        stamp = stamp.timestamp()
    return None if stamp is None else float(stamp)


def lease_age_s(store: str, run_name: str) -> float | None:
    """Seconds since the run's lease was last written; None when there is no lease."""
    url = lease_url(store, run_name)
    fs, path = storage.get_fs(url)
    try:
        info = storage.retrying(lambda: fs.info(path), url, "checking")
    except FileNotFoundError:
        return None
    stamp = modified_at(fs, info)
    # a lease whose time cannot be read is treated as just written: when in doubt, the run is running
    return 0.0 if stamp is None else max(0.0, time.time() - stamp)


def lease_holder(store: str, run_name: str, ttl_s: float = DEFAULT_TTL_S) -> str | None:
    """Who holds the run's lease ("host:pid, renewed 12s ago"), or None when nobody holds a live one."""
    age = lease_age_s(store, run_name)
    if age is None or age >= ttl_s:
        return None
    try:
        record = storage.read_json(lease_url(store, run_name))
        owner = record.get("owner", "?") if isinstance(record, dict) else "?"
    except (FileNotFoundError, storage.DamagedFileError):
        owner = "?"  # being rewritten or damaged: its age alone says it is live
    return f"{owner}, renewed {age:.0f}s ago"


def live_leases(store: str, ttl_s: float = DEFAULT_TTL_S) -> dict[str, dict[str, Any]]:
    """Every live lease in the store: run name -> its record (``{}`` when the record cannot be read; its age alone
    makes it live). One listing of ``runs/.leases/``."""
    folder = storage.join(runs_root(store), LEASE_FOLDER)
    fs, path = storage.get_fs(folder)
    try:
        entries = storage.retrying(lambda: fs.ls(path, detail=True), folder, "listing")
    except FileNotFoundError:
        return {}
    now = time.time()
    live: dict[str, dict[str, Any]] = {}
    for info in entries:
        name = info["name"].rstrip("/").rsplit("/", 1)[-1]
        if not name.endswith(".json") or storage.TEMP_MARK in name:
            continue
        stamp = modified_at(fs, info)
        if stamp is not None and now - stamp >= ttl_s:
            continue
        try:
            record = storage.read_json(storage.join(folder, name))
        except (FileNotFoundError, storage.DamagedFileError):
            record = {}
        live[name.removesuffix(".json")] = record if isinstance(record, dict) else {}
    return live


@contextmanager
def run_lease(
    store: str,
    run_name: str,
    *,
    dataset: str | None = None,
    dataset_version: str | None = None,
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
) -> Iterator[None]:
    """Hold the lease on ``run_name`` while the block runs: written now, renewed in a daemon thread, removed at
    the end. A renewal that fails (the store is away for a while) is logged and tried again at the next beat; the
    lease may then expire, which only makes gc treat the run by its files' age instead."""
    url = lease_url(store, run_name)
    record = {
        "run": run_name,
        "owner": f"{socket.gethostname()}:{os.getpid()}",
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": dataset,
        "dataset_version": dataset_version,
    }
    storage.write_json(url, record)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(heartbeat_s):
            try:
                storage.write_json(url, {**record, "renewed_at": dt.datetime.now(dt.timezone.utc).isoformat(
                    timespec="seconds")})
            except Exception as err:  # noqa: BLE001 - a missed beat must not stop training; it is logged
                log.warning("could not renew the lease of run %s at %s: %s", run_name, url, err)

    beat = threading.Thread(target=renew, name=f"lease-{run_name}", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join(timeout=5)
        try:
            storage.remove(url)
        except Exception as err:  # noqa: BLE001 - a lease left behind expires by itself after its TTL
            log.warning("could not remove the lease of run %s at %s (it expires by itself): %s", run_name, url, err)
