"""The Jobs API while a head starts: connection refused, then 500 "No available agent to submit job": both are
retried within ``ClusterSpec.submit_wait_s``, then one line; other errors fail at once."""

from __future__ import annotations

import logging

import pytest

from pipelines import cluster

AGENT_NOT_READY = "Request failed with status code 500: No available agent to submit job, please try again later."
LOG = logging.getLogger("t")


class _Head:
    """A Jobs API client double: answers the first ``refusals`` submissions with ``error``, then accepts."""

    def __init__(self, refusals: int, error: Exception) -> None:
        self.refusals = refusals
        self.error = error
        self.submitted: list[dict] = []

    def submit_job(self, **job):
        if self.refusals:
            self.refusals -= 1
            raise self.error
        self.submitted.append(job)
        return job["submission_id"]


def _submit(head: _Head, wait_s: float = 60.0) -> None:
    cluster.call_jobs_api("the job submission", lambda: head.submit_job(entrypoint="x", submission_id="job-1"),
                          address="http://127.0.0.1:8265", wait_s=wait_s, logger=LOG)


@pytest.mark.parametrize("error", [RuntimeError(AGENT_NOT_READY),
                                   ConnectionError("HTTPConnectionPool: Max retries exceeded (Connection refused)")])
def test_a_starting_head_is_waited_for(monkeypatch, error):
    monkeypatch.setattr(cluster.time, "sleep", lambda s: None)
    head = _Head(3, error)
    _submit(head)
    assert [j["submission_id"] for j in head.submitted] == ["job-1"] and head.refusals == 0


def test_other_submission_errors_are_not_retried(monkeypatch):
    monkeypatch.setattr(cluster.time, "sleep", lambda s: None)
    head = _Head(1, RuntimeError("Request failed with status code 400: runtime_env is invalid"))
    with pytest.raises(RuntimeError, match="runtime_env is invalid"):
        _submit(head)
    assert head.submitted == []


def test_the_wait_is_bounded_and_ends_in_one_line(monkeypatch):
    clock = iter(range(0, 10_000, 50))
    monkeypatch.setattr(cluster.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(cluster.time, "sleep", lambda s: None)
    head = _Head(10_000, RuntimeError(AGENT_NOT_READY))
    with pytest.raises(cluster.ClusterJobError) as caught:
        _submit(head, wait_s=120)
    message = str(caught.value)
    assert "\n" not in message
    assert "http://127.0.0.1:8265" in message and "within 120 s" in message and "No available agent" in message
