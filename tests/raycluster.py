"""A real multi-node Ray cluster on one machine, for tests: a head that runs no work (``--num-cpus=0``) and worker
nodes, each its own ``ray start --block`` process in its own session, stopped by process group.

A node can be given its own view of the filesystem: as root, ``unshare --mount`` starts it in a private mount
namespace with an empty tmpfs over each ``hidden`` folder, so the driver (this machine's normal view) sees a store
that the node does not. Usage::

    with RayCluster(tmp_path) as cluster:
        train = cluster.add_node(cpus=2, resources={"train": 2})
        cluster.add_node(cpus=1, resources={"decode": 1}, hidden=[store_dir])
        subprocess.run([..., "--ray-address", cluster.address])
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from servers import free_port

BIN = Path(sys.executable).parent


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
                f"--object-store-memory={self.object_store_bytes}",
                f"--dashboard-agent-listen-port={free_port()}"]  # not the default 52365 another Ray may hold
        head = self._start(args, self.tmp / "head.log", {"CPU": 0.0})
        deadline = time.monotonic() + 240
        while True:  # up when the state API (served by the dashboard, which starts last) lists the head alive
            alive = self._alive()
            if alive:
                head.node_id = alive[0].node_id
                return self
            if time.monotonic() > deadline or head.proc.poll() is not None:
                self.__exit__(None, None, None)
                pytest.fail(f"the Ray head did not come up:\n{self.tail(head)}")
            time.sleep(0.5)

    def add_node(self, cpus: float, resources: dict[str, float], hidden: list[Path] = (), *,
                 env: dict[str, str] | None = None, timeout: float = 240.0) -> Node:
        """Start a worker node with ``cpus`` logical CPUs and custom ``resources`` and wait until it has joined;
        ``hidden`` folders look empty to it (and to every process it starts); ``env`` is added to the environment
        of the node and so of every worker process it starts. On a loaded machine ``ray start``
        gives up after 30 s when its raylet registers late ("timed out during startup"): that start is retried."""
        args = [str(BIN / "ray"), "start", "--block", f"--address={self.address}", "--node-ip-address=127.0.0.1",
                f"--num-cpus={cpus}", f"--resources={json.dumps(resources)}",
                f"--object-store-memory={self.object_store_bytes}", "--disable-usage-stats",
                f"--dashboard-agent-listen-port={free_port()}",
                # every node on this machine writes to the head's session logs folder, which the head's log
                # monitor already forwards to the drivers (each worker's lines once); a monitor per node would
                # scan the same folder ten times a second and forward each line again
                "--include-log-monitor=false"]
        if hidden:
            mounts = " && ".join(f"mount -t tmpfs tmpfs {shlex.quote(str(p))}" for p in hidden)
            args = ["unshare", "--mount", "--propagation", "private", "bash", "-c",
                    f"{mounts} && exec {shlex.join(args)}"]
        wanted = _nonzero({"CPU": float(cpus), **resources})
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            known = {n.node_id for n in self.nodes if n.node_id}
            node = self._start(args, self.tmp / f"node{len(self.nodes)}-{attempt}.log", wanted, env)
            while time.monotonic() < deadline and node.proc.poll() is None:
                joined = [e for e in self._alive() if e.node_id not in known and _resources(e) == wanted]
                if joined:
                    node.node_id = joined[0].node_id
                    return node
                time.sleep(0.5)
            self.nodes.remove(node)
            self._stop(node)
            attempt += 1
            if time.monotonic() >= deadline or attempt == 4:
                pytest.fail(f"a Ray node with {wanted} did not join within {timeout:.0f}s:\n{self.tail(node)}")

    def _start(self, args: list[str], log: Path, resources: dict[str, float],
               env: dict[str, str] | None = None) -> Node:
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, env={**self.env, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        node = Node(proc, log, resources)
        self.nodes.append(node)
        return node

    def _alive(self) -> list:
        from ray.util.state import list_nodes

        try:
            return [n for n in list_nodes(address=self.dashboard, detail=True) if n.state == "ALIVE"]
        except Exception:  # noqa: BLE001 - the state API is still starting
            return []

    def kill(self, node: Node) -> None:
        """SIGKILL the node's whole process group at once (a machine that vanishes)."""
        try:
            os.killpg(node.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        node.proc.wait(timeout=30)

    def tail(self, node: Node, lines: int = 40) -> str:
        return f"--- {node.log.name}\n" + "\n".join(node.log.read_text(errors="replace").splitlines()[-lines:])

    def __exit__(self, *exc: object) -> None:
        for node in reversed(self.nodes):  # workers first, the head last
            self._stop(node)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    @staticmethod
    def _stop(node: Node) -> None:
        """SIGTERM the node's process group (5 s to stop), then SIGKILL whatever is left in it."""
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


def _nonzero(resources: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in resources.items() if v}


def _resources(entry) -> dict[str, float]:
    """A state-API node's logical resources (CPUs and custom ones; not memory, object store or node labels)."""
    return _nonzero({k: v for k, v in entry.resources_total.items()
                     if not k.startswith(("node:", "memory", "object_store_memory", "accelerator_type"))})
