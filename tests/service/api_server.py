"""Start `eulerbench api` as a real process with settings of a test's own, and no worker.

Each server gets a private redis-server, so the jobs it queues are never consumed by the
session stack's worker (Celery queues are not under the store's key prefix) and stay
queued for the test to inspect.
"""

from __future__ import annotations

import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from service.embedded import api_command, free_port, start_redis


@contextmanager
def api_server(env: dict[str, str], log_dir: Path, host: str = "127.0.0.1",
               timeout_s: float = 30.0, workers: int = 1) -> Iterator[tuple[str, str]]:
    """Run the API (workers processes) with env added to the environment; yield (API URL, Redis URL)."""
    redis_url, redis_process = start_redis()
    port = free_port()
    log = open(log_dir / f"api-{port}.log", "ab")
    process = subprocess.Popen(api_command(host, port, workers), stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "EULERBENCH_REDIS_URL": redis_url, **env})
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, timeout_s, log_dir)
        yield url, redis_url
    finally:
        for child in (process, redis_process):
            child.terminate()
            child.wait(timeout=20)
        log.close()


def _wait_healthy(url: str, process: subprocess.Popen, timeout_s: float, log_dir: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited with code {process.returncode}; see {log_dir}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the API at {url} was not healthy within {timeout_s:g} s; see {log_dir}")
