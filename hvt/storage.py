"""One place that knows how to talk to the store: any fsspec URL (a local folder by default, ``s3://`` in production).

Every stage reads and writes through these helpers, so the same code runs on a laptop and on a cluster.
Writes that others may observe are atomic: the bytes go to a temporary name first and are renamed (or, on
object stores where rename is a copy, copied then deleted) only when complete.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import fsspec
from fsspec.core import url_to_fs

DEFAULT_STORE = "./hvt-store"
STORE_ENV = "HVT_STORE"


class StoreError(ValueError):
    """The store URL or a path inside it cannot be used; the message says what to do."""


def resolve_store(store: str | None = None) -> str:
    """Return the store URL to use: the argument, else ``$HVT_STORE``, else ``./hvt-store`` (made absolute)."""
    url = store or os.environ.get(STORE_ENV) or DEFAULT_STORE
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    if protocol not in fsspec.available_protocols():
        raise StoreError(
            f"store {url!r}: unknown protocol {protocol!r}. Use a local folder, file://, s3://bucket/prefix "
            "or another fsspec URL."
        )
    if protocol == "file":
        path = url[len("file://") :] if url.startswith("file://") else url
        return os.path.abspath(os.path.expanduser(path))
    return url.rstrip("/")


def get_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Filesystem and protocol-less path for ``url``."""
    try:
        fs, path = url_to_fs(url)
    except (ImportError, ValueError) as err:
        raise StoreError(f"cannot open store path {url!r}: {err}") from err
    return fs, path


def join(base: str, *parts: str) -> str:
    """Join path parts onto a local path or URL, always with ``/``."""
    if "://" in base:
        scheme, rest = base.split("://", 1)
        return f"{scheme}://" + posixpath.join(rest, *parts)
    return os.path.join(base, *parts)


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def exists(url: str) -> bool:
    fs, path = get_fs(url)
    return fs.exists(path)


def makedirs(url: str) -> None:
    fs, path = get_fs(url)
    fs.makedirs(path, exist_ok=True)


def listdir(url: str) -> list[str]:
    """Names (not paths) directly under ``url``; empty when it does not exist."""
    fs, path = get_fs(url)
    if not fs.exists(path):
        return []
    return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))


def read_bytes(url: str) -> bytes:
    fs, path = get_fs(url)
    with fs.open(path, "rb") as handle:
        return handle.read()


def read_text(url: str) -> str:
    return read_bytes(url).decode("utf-8")


def read_json(url: str) -> Any:
    return json.loads(read_text(url))


@contextmanager
def atomic_open(url: str, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open ``url`` for writing so that readers see either nothing or the complete file.

    Writes to ``<url>.tmp-<random>`` and renames on success; removes the temporary file on error.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_open is for writing, got mode {mode!r}")
    fs, path = get_fs(url)
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with fs.open(tmp, mode) as handle:
            yield handle
        fs.mv(tmp, path)
    except BaseException:
        try:
            if fs.exists(tmp):
                fs.rm(tmp)
        except OSError:
            pass
        raise


def write_bytes(url: str, data: bytes) -> None:
    with atomic_open(url, "wb") as handle:
        handle.write(data)


def write_text(url: str, text: str) -> None:
    write_bytes(url, text.encode("utf-8"))


def write_json(url: str, obj: Any) -> None:
    write_text(url, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def create_exclusive(url: str, data: bytes) -> bool:
    """Write ``url`` only if it does not exist yet; return False (and write nothing) when it does.

    Used for immutable objects (registry versions): a racing writer loses instead of overwriting.
    """
    fs, path = get_fs(url)
    if fs.exists(path):
        return False
    if is_local(url):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        return True
    write_bytes(url, data)
    return True
