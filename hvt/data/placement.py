"""Where Ray Data's read and decode tasks run: on the cluster's decode nodes when it has any, else on any CPU.

A cluster marks its CPU-only decode nodes with the custom resource ``decode`` (``ray start --resources='{"decode":
N}'``, N = the node's CPUs; ``infra/ray/gpu-cluster.yaml`` and ``infra/k8s/rayjob.yaml`` do). A task that asks
for ``decode`` (as much of it as the CPUs it reserves) can only be scheduled there, so decoding never takes CPUs
on the nodes that host the trainers. ``ScalingSpec.decode_on`` chooses:

* ``auto`` (default): ``decode`` when the running cluster has that resource, else any CPU (a laptop, one node);
* ``decode-nodes``: always ``decode``; an autoscaling cluster whose decode group starts at zero nodes then starts
  one for the first decode task (``auto`` would see no decode node yet and decode on the GPU nodes);
* ``any``: never ask for it.
"""

from __future__ import annotations

from typing import Literal

DECODE_RESOURCE = "decode"
DecodeOn = Literal["auto", "decode-nodes", "any"]


def resolve_decode_resource(decode_on: DecodeOn, cluster_resources: dict[str, float] | None = None) -> str | None:
    """The custom resource read and decode tasks must request (``"decode"``), or None for any CPU.

    ``cluster_resources``: the cluster's total resources (``ray.cluster_resources()``, read when None and
    ``decode_on`` is ``auto``; Ray must then be running). Raises ValueError for an unknown ``decode_on``."""
    if decode_on == "any":
        return None
    if decode_on == "decode-nodes":
        return DECODE_RESOURCE
    if decode_on != "auto":
        raise ValueError(f"decode_on={decode_on!r}: choose auto, decode-nodes or any")
    if cluster_resources is None:
        import ray

        cluster_resources = ray.cluster_resources()
    return DECODE_RESOURCE if float(cluster_resources.get(DECODE_RESOURCE, 0)) > 0 else None


def task_resources(decode_resource: str | None, cpus: float) -> dict[str, float]:
    """``ray_remote_args`` ``resources`` entry of a read or decode task reserving ``cpus`` CPUs: as much of
    ``decode_resource`` as CPUs (a decode node registers one unit per CPU), or nothing."""
    return {decode_resource: float(cpus)} if decode_resource else {}
