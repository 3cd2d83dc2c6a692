"""One place that knows how to talk to the store: any fsspec URL (a local folder by default, ``s3://`` in production).

Every stage reads and writes through these helpers, so the same code runs on a laptop and on a cluster.
Every file is written whole or not at all: locally the bytes go to a temporary name, are fsynced and renamed
into place; on object stores an object appears only when its single PUT completes. Transient store errors are
retried with back-off within a bound (``hvt.store_faults``); a damaged file raises ``DamagedFileError``.
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

from hvt.store_faults import DamagedFileError as DamagedFileError
from hvt.store_faults import StoreError as StoreError
from hvt.store_faults import StoreUnavailableError as StoreUnavailableError
from hvt.store_faults import fault_point as fault_point
from hvt.store_faults import is_transient as is_transient
from hvt.store_faults import retrying as retrying

DEFAULT_STORE = "./hvt-store"
STORE_ENV = "HVT_STORE"


# A file being written under a temporary name (renamed into place when whole) carries this in its name.
TEMP_MARK = ".tmp-"


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
    return retrying(lambda: fs.exists(path), url, "checking")


def makedirs(url: str) -> None:
    fs, path = get_fs(url)
    retrying(lambda: fs.makedirs(path, exist_ok=True), url, "creating")


def listdir(url: str) -> list[str]:
    """Names (not paths) directly under ``url``; empty when it does not exist."""
    fs, path = get_fs(url)

    def names() -> list[str]:
        if not fs.exists(path):
            return []
        return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))

    return retrying(names, url, "listing")


def read_bytes(url: str) -> bytes:
    fs, path = get_fs(url)

    def read() -> bytes:
        with fs.open(path, "rb") as handle:
            return handle.read()

    return retrying(read, url, "reading")


def read_text(url: str) -> str:
    return read_bytes(url).decode("utf-8")


def read_json(url: str) -> Any:
    """Parsed JSON of ``url``; a file that is empty, cut short or not JSON raises :class:`DamagedFileError`."""
    data = read_bytes(url)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise DamagedFileError(
            url, f"{'empty' if not data else f'not valid JSON ({err})'}; run `hvt store check --repair`"
        ) from None


def remove(url: str, *, recursive: bool = False) -> None:
    """Delete a file (or a folder with ``recursive``); a missing one is not an error."""
    fs, path = get_fs(url)

    def rm() -> None:
        try:
            fs.rm(path, recursive=recursive)
        except FileNotFoundError:
            pass

    retrying(rm, url, "removing")


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_name(path: str) -> str:
    """``<path>.tmp-<random>``: where a file is written before it is renamed into place (see ``TEMP_MARK``)."""
    return f"{path}{TEMP_MARK}{uuid.uuid4().hex[:8]}"


@contextmanager
def atomic_open(url: str, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open ``url`` for writing so that readers see either nothing or the complete file.

    Local: writes ``<path>.tmp-<random>``, fsyncs, and renames over ``path`` on success; removes the temporary file
    on error (a killed process leaves it; ``hvt store check --repair`` removes it). Object stores: writes the key
    itself — the object appears only when its single PUT (or multipart upload) completes, never in part.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_open is for writing, got mode {mode!r}")
    fs, path = get_fs(url)
    if not is_local(url):
        handle = fs.open(path, mode)
        try:
            yield handle
            fault_point("write")
        except BaseException:
            # closing would upload what was written so far: abort the upload instead, so nothing appears
            discard = getattr(handle, "discard", None)
            if discard is not None:
                try:
                    discard()
                except Exception:  # noqa: BLE001 - the original error is the one to report
                    pass
            handle.closed = True
            raise
        handle.close()
        return
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, mode) as handle:
            yield handle
            handle.flush()
            fault_point("write")
            os.fsync(handle.fileno())
        fault_point("rename")
        os.replace(tmp, path)
        _fsync_dir(parent or ".")
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_bytes(url: str, data: bytes) -> None:
    """Write the whole of ``data`` to ``url`` or nothing (retried on transient store errors)."""
    if is_local(url):
        with atomic_open(url, "wb") as handle:
            handle.write(data)
        return
    fs, path = get_fs(url)
    fault_point("write")
    retrying(lambda: fs.pipe_file(path, data), url, "writing")


def write_text(url: str, text: str) -> None:
    write_bytes(url, text.encode("utf-8"))


def write_json(url: str, obj: Any) -> None:
    write_text(url, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def create_exclusive(url: str, data: bytes) -> bool:
    """Write ``url`` whole, only if it does not exist yet; return False (and write nothing) when it does.

    Local: the bytes go to a temporary file first, which is then hard-linked to ``path`` (``link`` fails when the
    name exists, atomically), so a crash leaves either nothing or the whole file. S3: one PUT with
    ``If-None-Match: *`` (the server refuses it when the key exists; see :func:`conditional_writes`).
    """
    fs, path = get_fs(url)
    if is_local(url):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = temporary_name(path)
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                fault_point("write")
                os.fsync(handle.fileno())
            try:
                fault_point("rename")
                os.link(tmp, path)
            except FileExistsError:
                return False
            _fsync_dir(os.path.dirname(path) or ".")
            return True
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    fault_point("write")
    return retrying(lambda: put_if_absent(fs, path, data), url, "creating")


def _precondition_failed(err: BaseException) -> bool:
    text = str(err)
    return "PreconditionFailed" in text or "pre-condition" in text or "(412)" in text or "ConditionalRequestConflict" in text


def put_if_absent(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """One S3 PUT with ``If-None-Match: *``: True when this call created the object, False when it existed.

    Raises :class:`StoreError` when the server ignores the condition (see :func:`conditional_writes`).
    """
    if not conditional_writes(fs, path.split("/", 1)[0]):
        raise StoreError(
            f"the S3 server behind s3://{path.split('/', 1)[0]} ignores conditional writes (If-None-Match), so two "
            "writers could both claim one name. Use a server that honours them (AWS S3, SeaweedFS, MinIO) or a local store."
        )
    bucket, key = path.split("/", 1)
    from fsspec.asyn import sync

    try:
        sync(fs.loop, fs._call_s3, "put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
    except OSError as err:
        if _precondition_failed(err):
            return False
        raise
    fs.invalidate_cache(posixpath.dirname(path))
    return True


_CONDITIONAL: dict[tuple[str, str], bool] = {}


def conditional_writes(fs: fsspec.AbstractFileSystem, bucket: str) -> bool:
    """Whether the S3 server refuses a second ``If-None-Match: *`` PUT of one key (probed once per process)."""
    endpoint = str(getattr(fs, "client_kwargs", {}).get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL", ""))
    cache_key = (endpoint, bucket)
    if cache_key not in _CONDITIONAL:
        from fsspec.asyn import sync

        key = f".hvt-probe/conditional-{uuid.uuid4().hex}"
        put = lambda: sync(fs.loop, fs._call_s3, "put_object", Bucket=bucket, Key=key, Body=b"1", IfNoneMatch="*")  # noqa: E731
        retrying(put, f"s3://{bucket}/{key}", "probing")
        try:
            retrying(put, f"s3://{bucket}/{key}", "probing")
            honoured = False
        except OSError as err:
            if not _precondition_failed(err):
                raise
            honoured = True
        finally:
            retrying(lambda: fs.rm(f"{bucket}/{key}"), f"s3://{bucket}/{key}", "removing")
        _CONDITIONAL[cache_key] = honoured
    return _CONDITIONAL[cache_key]


def rename_no_replace(src: str, dst: str) -> bool:
    """Rename local ``src`` to ``dst`` unless ``dst`` exists (atomically: ``renameat2(RENAME_NOREPLACE)``);
    False when it exists. Where the kernel or filesystem lacks that flag, a plain ``rename`` is used, which
    still refuses to replace a non-empty folder (the registry never makes an empty one)."""
    import ctypes
    import errno

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        at_fdcwd, rename_noreplace = -100, 1
        if renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_noreplace) == 0:
            return True
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            return False
        if code not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(code, os.strerror(code), dst)
    if os.path.lexists(dst):
        return False
    try:
        os.rename(src, dst)
    except OSError as err:
        if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
    return True
