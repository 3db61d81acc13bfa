"""Waiting for a job over HTTP, shared by the service tests."""

from __future__ import annotations

import time


def wait_status(client, job_id: str, statuses: set[str], timeout_s: float = 120) -> dict:
    """Poll GET /v1/jobs/{job_id} until its status is one of statuses; return the record.

    Raises AssertionError, naming the last status, when timeout_s seconds pass first.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = client.get(f"/v1/jobs/{job_id}").json()
        if record["status"] in statuses:
            return record
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {record['status']} after {timeout_s} s")
