"""Removing one folder of the store (a run, a dataset version) without taking a concurrent writer's files with it.

The rule: only what gc listed, and only if nothing changed since it listed it. gc decides from a snapshot of the
folder (every file with its size and modification time); right before removing it, the folder is compared with
that snapshot again, and any difference (a new file, a rewritten one, a lease taken on the run) keeps it.

- Local store: the folder is first renamed into ``{store}/.gc-trash/`` (one atomic ``rename``: from then on a
  writer that opens the old path creates a new folder instead of writing into the doomed one), then compared with
  the snapshot; if a writer got in between, it is renamed back (or, when the writer has already re-created the
  name, left in the trash and reported). Only then is it deleted.
- Object store (no rename): the listing is compared once more, then exactly the snapshot's objects are deleted,
  the ones that make the folder "exist" first (a dataset's ``manifest.json``, a run's checkpoint snapshot), so a
  reader never finds a record pointing at deleted files. An object written after the snapshot is never deleted.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hvt import storage
from hvt.maintenance.lease import modified_at

TRASH_FOLDER = ".gc-trash"


@dataclass(frozen=True)
class FolderSnapshot:
    """Every file under a folder: relative path -> (size, modification time)."""

    url: str
    files: dict[str, tuple[int, float | None]]
    newest: float | None  # newest modification time of the folder, its subfolders and its files

    @property
    def size(self) -> int:
        return sum(size for size, _ in self.files.values())


def snapshot_folder(url: str) -> FolderSnapshot:
    """List ``url`` recursively, with sizes and modification times (one paginated listing on S3)."""
    fs, path = storage.get_fs(url)
    path = path.rstrip("/")
    fs.invalidate_cache(path)  # s3fs caches listings per process; this one must see other writers
    try:
        found = storage.retrying(lambda: fs.find(path, withdirs=True, detail=True), url, "listing")
        own = [storage.retrying(lambda: fs.info(path), url, "checking")]
    except FileNotFoundError:
        found, own = {}, []
    files: dict[str, tuple[int, float | None]] = {}
    stamps = [modified_at(fs, info) for info in own]
    for name, info in found.items():
        stamps.append(modified_at(fs, info))
        if info.get("type") == "directory" or name.endswith("/"):
            continue
        files[name[len(path):].lstrip("/")] = (int(info.get("size") or 0), modified_at(fs, info))
    known = [s for s in stamps if s is not None]
    return FolderSnapshot(url, files, max(known) if known else None)


def differs(before: FolderSnapshot, after: FolderSnapshot) -> str | None:
    """How ``after`` differs from ``before`` (None when it does not): what a concurrent writer did."""
    added = sorted(set(after.files) - set(before.files))
    if added:
        return f"{len(added)} file(s) appeared (e.g. {added[0]})"
    changed = sorted(name for name in before.files if name in after.files and after.files[name] != before.files[name])
    if changed:
        return f"{len(changed)} file(s) were rewritten (e.g. {changed[0]})"
    if before.newest is not None and after.newest is not None and after.newest > before.newest:
        return "the folder was modified"
    return None


@dataclass(frozen=True)
class Outcome:
    removed: bool
    note: str = ""  # why it was kept after all, or what was left behind
    contended: bool = True  # when kept: because a writer (or a lease) got to it while gc ran


# Called with a folder's URL after gc has decided to remove it and before its last comparison with the snapshot;
# a no-op, replaced in tests to play a writer that starts at the worst moment.
def _about_to_remove(url: str) -> None:
    return None


def remove_folder(
    store: str, snapshot: FolderSnapshot, *, still_needed: Callable[[], str | None], first: Sequence[str] = ()
) -> Outcome:
    """Remove the folder of ``snapshot`` unless it changed since or ``still_needed()`` names a reason to keep it.
    ``first``: relative paths to delete before the rest on object stores (what makes the folder count)."""
    reason = still_needed() or differs(snapshot, snapshot_folder(snapshot.url))
    if reason:
        return Outcome(False, reason)
    _about_to_remove(snapshot.url)
    if storage.is_local(snapshot.url):
        return _remove_local(store, snapshot, still_needed)
    return _remove_objects(snapshot, still_needed, first)


def _remove_local(store: str, snapshot: FolderSnapshot, still_needed: Callable[[], str | None]) -> Outcome:
    _, path = storage.get_fs(snapshot.url)
    trash_root = os.path.join(storage.get_fs(storage.resolve_store(store))[1], TRASH_FOLDER)
    os.makedirs(trash_root, exist_ok=True)
    try:
        return _move_check_delete(path, trash_root, snapshot, still_needed)
    finally:
        try:
            os.rmdir(trash_root)  # leave no empty folder behind; one still holding something stays (reported)
        except OSError:
            pass


def _move_check_delete(
    path: str, trash_root: str, snapshot: FolderSnapshot, still_needed: Callable[[], str | None]
) -> Outcome:
    trash = os.path.join(trash_root, f"{uuid.uuid4().hex[:8]}-{os.path.basename(path.rstrip('/'))}")
    try:
        os.rename(path, trash)  # same filesystem as the store: atomic
    except FileNotFoundError:
        return Outcome(False, "already gone (removed by someone else)", contended=False)
    moved = snapshot_folder(trash)
    # a move keeps every modification time (only the ctime changes): compare files and the newest mtime
    reason = still_needed() or differs(snapshot, FolderSnapshot(snapshot.url, moved.files, moved.newest))
    if reason:
        if storage.rename_no_replace(trash, path):
            return Outcome(False, f"{reason}; put back")
        return Outcome(False, f"{reason}, and {path} was re-created meanwhile: the old folder is kept at {trash} "
                              "(compare the two and remove it by hand)")
    shutil.rmtree(trash)
    return Outcome(True)


def _remove_objects(
    snapshot: FolderSnapshot, still_needed: Callable[[], str | None], first: Sequence[str]
) -> Outcome:
    reason = still_needed() or differs(snapshot, snapshot_folder(snapshot.url))
    if reason:
        return Outcome(False, reason)
    fs, base = storage.get_fs(snapshot.url)
    base = base.rstrip("/")
    leading = [name for name in first if name in snapshot.files]
    rest = sorted(name for name in snapshot.files if name not in leading)
    for name in leading:  # one at a time, in order: the folder stops counting before its contents go
        storage.remove(storage.join(snapshot.url, name))
    paths = [posixpath.join(base, name) for name in rest]
    for start in range(0, len(paths), 1000):  # one bulk delete per 1000 keys (the S3 limit)
        chunk = paths[start:start + 1000]
        storage.retrying(lambda chunk=chunk: _rm_missing_ok(fs, chunk), snapshot.url, "removing")
    left = snapshot_folder(snapshot.url).files
    if left:
        return Outcome(True, f"{len(left)} file(s) written while gc ran were left in place (e.g. {sorted(left)[0]})")
    return Outcome(True)


def _rm_missing_ok(fs: Any, paths: list[str]) -> None:
    try:
        fs.rm(paths)
    except FileNotFoundError:
        pass
