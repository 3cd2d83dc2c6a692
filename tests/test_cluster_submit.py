"""Submitting to a Ray head whose job agent has not registered yet waits for it; other errors fail at once."""

from __future__ import annotations

import logging

import pytest

from pipelines import cluster


class _Head:
    """A Jobs API client double: refuses ``refusals`` submissions with ``message``, then accepts."""

    def __init__(self, refusals: int, message: str) -> None:
        self.refusals = refusals
        self.message = message
        self.submitted: list[dict] = []

    def submit_job(self, **job):
        if self.refusals:
            self.refusals -= 1
            raise RuntimeError(f"Request failed with status code 500: {self.message}.")
        self.submitted.append(job)
        return job["submission_id"]


def test_submission_waits_for_the_job_agent(monkeypatch):
    monkeypatch.setattr(cluster.time, "sleep", lambda s: None)
    head = _Head(3, cluster._AGENT_NOT_READY + ", please try again later")
    cluster._submit_when_agent_ready(head, logging.getLogger("t"), entrypoint="x", submission_id="job-1")
    assert [j["submission_id"] for j in head.submitted] == ["job-1"] and head.refusals == 0


def test_other_submission_errors_are_not_retried(monkeypatch):
    monkeypatch.setattr(cluster.time, "sleep", lambda s: None)
    head = _Head(1, "runtime_env is invalid")
    with pytest.raises(RuntimeError, match="runtime_env is invalid"):
        cluster._submit_when_agent_ready(head, logging.getLogger("t"), entrypoint="x", submission_id="job-2")
    assert head.submitted == []


def test_the_wait_for_the_agent_is_bounded(monkeypatch):
    clock = iter(range(0, 10_000, 50))
    monkeypatch.setattr(cluster.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(cluster.time, "sleep", lambda s: None)
    head = _Head(10_000, cluster._AGENT_NOT_READY)
    with pytest.raises(RuntimeError, match="No available agent"):
        cluster._submit_when_agent_ready(head, logging.getLogger("t"), entrypoint="x", submission_id="job-3")
