"""What can go wrong talking to a store, told apart: a damaged file, an unreachable store, a transient error.

Transient errors — connection refused or reset, timeouts, HTTP 5xx, throttling (``SlowDown``) — are retried with
exponential back-off by :func:`retrying` for at most ``$HVT_STORE_RETRY_SECONDS`` (default 30) seconds in all;
after that, one :class:`StoreUnavailableError` names the store and what to do. Everything else (a missing file,
a refused permission, a damaged file) is not retried: waiting would not change it.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_SECONDS_ENV = "HVT_STORE_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 30.0
_FIRST_DELAY = 0.25  # seconds; doubles each try up to _MAX_DELAY
_MAX_DELAY = 5.0

_TRANSIENT_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EPIPE,
                     errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EAGAIN}
# Words in the error names and messages of botocore, aiohttp and s3fs that mean "try again later".
_TRANSIENT_NAMES = ("EndpointConnectionError", "ConnectTimeout", "ReadTimeout", "ConnectionClosedError",
                    "ClientConnectorError", "ServerDisconnectedError", "ClientOSError", "ClientPayloadError",
                    "IncompleteRead", "ResponseStreamingError", "TimeoutError", "FSTimeoutError")
_TRANSIENT_TEXT = ("SlowDown", "reduce your request rate", "Throttl", "ServiceUnavailable", "Service Unavailable",
                   "InternalError", "Internal Server Error", "Bad Gateway", "Gateway Timeout", "RequestTimeout",
                   "Connection reset", "Connection refused", "Could not connect to the endpoint",
                   "(500)", "(502)", "(503)", "(504)", "status code: 5")


class StoreError(ValueError):
    """The store URL or a path inside it cannot be used; the message says what to do."""


class DamagedFileError(StoreError):
    """A file in the store exists but cannot be used (empty, cut short, not what its checksum says)."""

    def __init__(self, url: str, problem: str = "") -> None:
        super().__init__(f"{url}: {problem}")
        self.url = url
        self.problem = problem


class StoreUnavailableError(StoreError):
    """The store did not answer (or kept failing) for longer than the retry bound."""


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while err is not None and err not in seen and len(seen) < 8:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def is_transient(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) is a storage error that may go away by itself."""
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, StoreError)):
        return False
    for cause in _chain(err):
        if isinstance(cause, (ConnectionError, TimeoutError)):
            return True
        if isinstance(cause, OSError) and cause.errno in _TRANSIENT_ERRNOS:
            return True
        names = {cls.__name__ for cls in type(cause).__mro__}
        if names & set(_TRANSIENT_NAMES):
            return True
        response = getattr(cause, "response", None)
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if int(status) >= 500 or response.get("Error", {}).get("Code") in ("SlowDown", "Throttling"):
                return True
        text = str(cause)
        if any(word in text for word in _TRANSIENT_TEXT):
            return True
    return False


KILL_ENV = "HVT_FAULT_KILL_AT"
FAIL_ENV = "HVT_FAULT_ENOSPC_AT"
PAUSE_ENV = "HVT_FAULT_PAUSE_AT"  # sleeps $HVT_FAULT_PAUSE_S (default 3) there: time for a test to stop a server
PAUSE_FLAG_ENV = "HVT_FAULT_PAUSE_FLAG"  # a file created when the pause begins (what the test waits for)
_fault_counts: dict[str, int] = {}


def fault_point(name: str) -> None:
    """A named moment in a write, for fault tests. ``$HVT_FAULT_KILL_AT=name`` (or ``name#n``: the n-th time)
    kills the process right here (``os._exit(137)``, as SIGKILL would: no cleanup); ``$HVT_FAULT_ENOSPC_AT`` raises
    "No space left on device" instead; ``$HVT_FAULT_PAUSE_AT`` pauses. Costs three environment lookups when none
    is set."""
    kill, fail, pause = os.environ.get(KILL_ENV), os.environ.get(FAIL_ENV), os.environ.get(PAUSE_ENV)
    if not kill and not fail and not pause:
        return
    _fault_counts[name] = _fault_counts.get(name, 0) + 1
    hit = {name, f"{name}#{_fault_counts[name]}"}
    if kill in hit:
        os._exit(137)
    if fail in hit:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)
    if pause in hit:
        flag = os.environ.get(PAUSE_FLAG_ENV)
        if flag:
            with open(flag, "w") as handle:
                handle.write(name)
        time.sleep(float(os.environ.get("HVT_FAULT_PAUSE_S", "3")))


def retry_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get(RETRY_SECONDS_ENV, DEFAULT_RETRY_SECONDS)))
    except ValueError:
        return DEFAULT_RETRY_SECONDS


def unavailable(url: str, what: str, err: BaseException, waited: float) -> StoreUnavailableError:
    store = url.split("/", 3)
    where = "/".join(store[:3]) if "://" in url else url
    return StoreUnavailableError(
        f"store {where} unavailable while {what} {url} ({type(err).__name__}: {str(err)[:160]}), still failing "
        f"after {waited:.0f}s of retries. Check that the store is up and reachable (endpoint, network, "
        f"credentials), then re-run: finished work is kept and resumes ({RETRY_SECONDS_ENV} sets the retry time)."
    )


def retrying(fn: Callable[[], T], url: str, what: str, *, budget: float | None = None) -> T:
    """Call ``fn``; on a transient storage error try again with back-off for at most ``budget`` seconds
    (default :func:`retry_seconds`); then raise :class:`StoreUnavailableError`. Other errors pass through."""
    budget = retry_seconds() if budget is None else budget
    started = time.monotonic()
    delay = _FIRST_DELAY
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as err:
            if not is_transient(err):
                raise
            waited = time.monotonic() - started
            if waited + delay > budget:
                raise unavailable(url, what, err, waited) from err
            attempt += 1
            log.warning("%s %s failed (%s: %s); retry %d in %.1fs", what, url, type(err).__name__,
                        str(err)[:120], attempt, delay)
            time.sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, _MAX_DELAY)
