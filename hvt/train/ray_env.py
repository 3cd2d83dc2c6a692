"""Connecting to Ray: a local Ray sized for the machine by default, or an existing cluster."""

from __future__ import annotations

import logging
import os

import ray

log = logging.getLogger(__name__)


def ensure_ray(address: str | None = None) -> None:
    """Start (or connect to) Ray once per process.

    A local Ray registers as many logical CPUs as this process may run on (``machine_cores``): more would let
    Ray place more work than the cores can run (on a 16-core GPU box, 32 CPUs' worth of decode tasks beside
    the trainers). Training workers reserve ``cpus_per_worker`` (fractional on small machines, 0.5 by default)
    and decode tasks ``decode_cpus`` each, so on 2 cores the defaults still leave Ray Data a CPU.
    """
    if ray.is_initialized():
        return
    if address:
        log.info("connecting to Ray at %s", address)
        ray.init(address=address, log_to_driver=True)
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    num_cpus = machine_cores()
    log.info("starting a local Ray with %d logical CPUs", num_cpus)
    # the dashboard serves the state API that Ray Train uses to watch its controller
    ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=True)


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container's cpuset narrows), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)
