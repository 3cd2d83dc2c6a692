"""Connecting to Ray: a local Ray sized for the machine by default, or an existing cluster."""

from __future__ import annotations

import logging
import os

import ray

log = logging.getLogger(__name__)


def ensure_ray(address: str | None = None) -> None:
    """Start (or connect to) Ray once per process.

    Locally, Ray gets more logical CPUs than there are cores: training workers take fractional CPUs and the
    decode actors need CPUs of their own, and on a 2-core machine exact accounting would leave Ray Data none
    (the trainer then waits forever for resources).
    """
    if ray.is_initialized():
        return
    if address:
        log.info("connecting to Ray at %s", address)
        ray.init(address=address, log_to_driver=True)
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    num_cpus = max(4, 2 * (os.cpu_count() or 1))
    log.info("starting a local Ray with %d logical CPUs", num_cpus)
    # the dashboard serves the state API that Ray Train uses to watch its controller
    ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=True)
