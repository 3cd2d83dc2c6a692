"""A real multi-node Ray cluster on one machine, for tests: a head that runs no work (``--num-cpus=0``) and worker
nodes, each its own ``ray start --block`` process in its own session, stopped by process group.

A node can be given its own view of the filesystem: as root, ``unshare --mount`` starts it in a private mount
namespace with an empty tmpfs over each ``hidden`` folder, so the driver (this machine's normal view) sees a store
that the node does not. Usage::

    with RayCluster(tmp_path) as cluster:
        train = cluster.add_node(cpus=2, resources={"train": 2})
        cluster.add_node(cpus=1, resources={"decode": 1}, hidden=[store_dir])
        cluster.wait_for_nodes(3)
        subprocess.run([..., "--ray-address", cluster.address])
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def can_unshare() -> bool:
    """Whether this process may start a node in a private mount namespace (root, util-linux unshare)."""
    return os.geteuid() == 0 and shutil.which("unshare") is not None


@dataclass
class Node:
    proc: subprocess.Popen
    log: Path
    resources: dict[str, float]
    node_id: str | None = None


@dataclass
class RayCluster:
    tmp: Path
    object_store_bytes: int = 200 * 1024**2
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.port, self.dashboard_port = free_port(), free_port()
        # short: Ray's socket paths must stay under 107 bytes
        self.temp_dir = Path(f"/tmp/hvt-rc-{os.getpid()}-{self.port}")
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1",
                    "RAY_DEDUP_LOGS": "0"}
        self.env.pop("RAY_ADDRESS", None)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def __enter__(self) -> RayCluster:
        args = [str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={self.port}",
                "--num-cpus=0", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
                "--include-dashboard=true", f"--temp-dir={self.temp_dir}", "--disable-usage-stats",
                f"--object-store-memory={self.object_store_bytes}"]
        self._start(args, self.tmp / "head.log", {"CPU": 0.0})
        deadline = time.monotonic() + 120
        while True:  # the dashboard (Jobs and state API) answers last
            try:
                urllib.request.urlopen(f"{self.dashboard}/api/version", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or self.nodes[0].proc.poll() is not None:
                    self.__exit__(None, None, None)
                    pytest.fail(f"the Ray head did not come up:\n{self.tail(self.nodes[0])}")
                time.sleep(0.5)
        return self

    def add_node(self, cpus: float, resources: dict[str, float], hidden: list[Path] = ()) -> Node:
        """Start a worker node with ``cpus`` logical CPUs and custom ``resources``; ``hidden`` folders look empty
        to it (and to every process it starts)."""
        args = [str(BIN / "ray"), "start", "--block", f"--address={self.address}", "--node-ip-address=127.0.0.1",
                f"--num-cpus={cpus}", f"--resources={json.dumps(resources)}",
                f"--object-store-memory={self.object_store_bytes}", "--disable-usage-stats"]
        if hidden:
            mounts = " && ".join(f"mount -t tmpfs tmpfs {shlex.quote(str(p))}" for p in hidden)
            args = ["unshare", "--mount", "--propagation", "private", "bash", "-c",
                    f"{mounts} && exec {shlex.join(args)}"]
        return self._start(args, self.tmp / f"node{len(self.nodes)}.log", {"CPU": float(cpus), **resources})

    def _start(self, args: list[str], log: Path, resources: dict[str, float]) -> Node:
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        node = Node(proc, log, resources)
        self.nodes.append(node)
        return node

    def alive_nodes(self) -> list[dict]:
        from ray.util.state import list_nodes

        return [n for n in list_nodes(address=self.dashboard, detail=True) if n.state == "ALIVE"]

    def wait_for_nodes(self, count: int, timeout: float = 120.0) -> None:
        """Wait until ``count`` nodes are alive; record each started node's id (matched by its resources)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                alive = self.alive_nodes()
            except Exception:  # noqa: BLE001 - the state API is not up yet
                alive = []
            if len(alive) >= count:
                break
            dead = [n for n in self.nodes if n.proc.poll() is not None]
            if dead or time.monotonic() > deadline:
                pytest.fail(f"{len(alive)} of {count} Ray nodes up:\n" + "\n".join(self.tail(n) for n in self.nodes))
            time.sleep(0.5)
        for node in self.nodes:
            if node.node_id is None:
                for entry in alive:
                    total = {k: float(v) for k, v in entry.resources_total.items()
                             if not k.startswith(("node:", "memory", "object_store_memory", "accelerator_type"))}
                    wanted = {k: v for k, v in node.resources.items() if v}
                    taken = {n.node_id for n in self.nodes}
                    if total == wanted and entry.node_id not in taken:
                        node.node_id = entry.node_id
                        break

    def kill(self, node: Node) -> None:
        """SIGKILL the node's whole process group at once (a machine that vanishes), and its leftovers."""
        try:
            os.killpg(node.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        node.proc.wait(timeout=30)

    def tail(self, node: Node, lines: int = 40) -> str:
        return f"--- {node.log.name}\n" + "\n".join(node.log.read_text(errors="replace").splitlines()[-lines:])

    def __exit__(self, *exc: object) -> None:
        for node in reversed(self.nodes):  # workers first, the head last
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if node.proc.poll() is not None:
                    break
                try:
                    os.killpg(node.proc.pid, sig)
                    node.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    continue
                except ProcessLookupError:
                    break
            try:
                os.killpg(node.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)
