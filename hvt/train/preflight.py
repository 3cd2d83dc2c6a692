"""Pre-flight: before any worker trains, every node that will host a trainer or a decode task proves it can use
the store.

On a cluster the driver is not where the work happens: a store path only the head sees (a local folder, a
filesystem mounted on the head alone) fails on the workers only after start-up, and a ``runs/`` folder the
workers cannot write fails at the first checkpoint upload, an epoch of GPU time later, and then again at every
retry. So one tiny task per such node (pinned to it, reserving no CPU) reads the dataset's ``manifest.json``
(its sha256 must be the one the driver read: the same store, not a look-alike path), checks that a shard of
each split exists, and writes and deletes a file under ``{store}/runs/``. A failure is one line naming the node,
the path and what to do; it is raised as :class:`PreflightError` (the CLI exits 2) within seconds.

Which nodes: every live node that can hold one training worker's resources (``ScalingSpec.resources_per_worker``)
and every node where read and decode tasks may run (the ``decode`` resource when placement asks for it, else
any node with CPUs). Nodes an autoscaler starts later are not probed (their image and mounts are the same).
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from hvt import storage
from hvt.config import TrainConfig
from hvt.ingest.versions import DatasetRef

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 120.0  # a node that cannot start a task in this long is as good as unreachable
_WHAT_TO_DO = "use an s3:// store or a filesystem mounted at the same path on every node"


class PreflightError(RuntimeError):
    """A node that will train or decode cannot use the store; the message names the node, the path, the fix."""


@dataclass(frozen=True)
class NodeRole:
    """A live Ray node and why it is probed."""

    node_id: str
    address: str
    roles: tuple[str, ...]  # "trainer" and/or "decode"

    @property
    def label(self) -> str:
        return f"{self.address} (node {self.node_id[:8]}, {' + '.join(self.roles)})"


def nodes_to_probe(
    nodes: list[dict[str, Any]], trainer_resources: dict[str, float], decode_resource: str | None
) -> list[NodeRole]:
    """The live nodes (``ray.nodes()`` entries) that can host a training worker (every resource of
    ``trainer_resources`` in their totals) or a read/decode task (``decode_resource`` if given, else CPUs)."""
    chosen = []
    for node in nodes:
        if not node.get("Alive"):
            continue
        total = node.get("Resources", {})
        roles = []
        if all(float(total.get(name, 0)) >= amount for name, amount in trainer_resources.items()):
            roles.append("trainer")
        if float(total.get(decode_resource or "CPU", 0)) > 0:
            roles.append("decode")
        if roles:
            chosen.append(NodeRole(node["NodeID"], node.get("NodeManagerAddress", "?"), tuple(roles)))
    return chosen


def probe_store(manifest_url: str, manifest_sha256: str, shard_urls: list[str], runs_url: str) -> str | None:
    """Run on a node: None when it can read the manifest (same sha256), see the shards and write under
    ``runs_url``; else one sentence saying what failed on which path."""
    try:
        data = storage.read_bytes(manifest_url)
    except Exception as err:  # noqa: BLE001 - any failure is the answer, reported as text
        return f"cannot read {manifest_url} ({type(err).__name__}: {err})"
    if hashlib.sha256(data).hexdigest() != manifest_sha256:
        return f"reads a different {manifest_url} than the driver (another store at the same path)"
    for url in shard_urls:
        try:
            if not storage.exists(url):
                return f"cannot see the shard {url}"
        except Exception as err:  # noqa: BLE001
            return f"cannot see the shard {url} ({type(err).__name__}: {err})"
    probe = storage.join(runs_url, f".preflight-{uuid.uuid4().hex}")
    try:
        storage.makedirs(runs_url)
        storage.write_bytes(probe, b"haltingvt pre-flight probe\n")
        storage.remove(probe)
    except Exception as err:  # noqa: BLE001
        return f"cannot write under {runs_url} ({type(err).__name__}: {err})"
    return None


def _first_shards(dataset: DatasetRef) -> list[str]:
    urls = []
    for split in ("train", "val"):
        shards = dataset.manifest.get("splits", {}).get(split, {}).get("shards", [])
        if shards:
            urls.append(storage.join(dataset.path, shards[0]["path"]))
    return urls


def run_preflight(cfg: TrainConfig, dataset: DatasetRef, decode_resource: str | None,
                  timeout_s: float = PROBE_TIMEOUT_S) -> list[NodeRole]:
    """Probe the store from every node that will train or decode (Ray must be running); return the nodes probed.
    Raises :class:`PreflightError` with one line on the first node that fails or does not answer in time."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = nodes_to_probe(ray.nodes(), cfg.scaling.resources_per_worker(), decode_resource)
    if not any("trainer" in n.roles for n in nodes):
        log.warning("pre-flight: no live node can host a training worker yet (%s); nodes an autoscaler starts "
                    "later are not probed", cfg.scaling.resources_per_worker())
    store = storage.resolve_store(cfg.store)
    args = (storage.join(dataset.path, "manifest.json"), dataset.manifest_sha256, _first_shards(dataset),
            storage.join(store, "runs"))
    probe = ray.remote(num_cpus=0, max_retries=0)(probe_store)
    started = time.monotonic()
    pending = {
        probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n.node_id, soft=False),
                      name="hvt-preflight").remote(*args): n
        for n in nodes
    }
    done, not_done = ray.wait(list(pending), num_returns=len(pending), timeout=timeout_s)
    gone: list[NodeRole] = []
    for ref in done:
        node = pending[ref]
        try:
            problem = ray.get(ref)
        except Exception as err:  # noqa: BLE001 - the node died or could not run Python with hvt
            if not _alive(node.node_id):  # it left the cluster (Ray lists a dead node for a while): not a user error
                gone.append(node)
                continue
            problem = f"could not run the probe ({type(err).__name__}: {str(err).strip().splitlines()[-1][:200]})"
        if problem:
            raise PreflightError(f"pre-flight: node {node.label} {problem}: {_WHAT_TO_DO}")
    for node in gone:
        log.warning("pre-flight: node %s left the cluster while it was probed; skipped", node.label)
    if not_done:
        for ref in not_done:
            ray.cancel(ref, force=True)
        node = pending[not_done[0]]
        raise PreflightError(
            f"pre-flight: node {node.label} did not answer within {timeout_s:.0f} s: check that it is healthy "
            "(`ray status`) and can start Python tasks"
        )
    probed = [n for n in nodes if n not in gone]
    log.info("pre-flight: %d node(s) read the dataset and wrote under runs/ in %.1f s", len(probed),
             time.monotonic() - started)
    return probed


def _alive(node_id: str) -> bool:
    import ray

    return any(n.get("NodeID") == node_id and n.get("Alive") for n in ray.nodes())
