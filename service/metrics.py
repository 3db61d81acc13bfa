"""Prometheus metrics at `/metrics`, in the text exposition format.

- `eulerbench_api_request_duration_seconds{method, route, status}`: a histogram of API
  latency, observed by `MetricsMiddleware` per route template (`/v1/jobs/{job_id}`), so
  job ids never become labels. Unmatched paths, and requests rejected by middleware
  before routing (401, 413 by Content-Length), share the route label `unmatched`.
- `eulerbench_jobs{status}`: jobs in the store by status, read at scrape time.
- `eulerbench_queue_length{queue}`: messages waiting in each Celery queue (LLEN of the
  queue's Redis list and of its priority lists), read at scrape time.
- `eulerbench_job_solve_seconds{basis, algorithm}`: a gauge histogram of `timings.solve_s`
  over the jobs in the store that have ended and have timings. It is computed from the
  records at scrape time, because the workers serve no HTTP and the API does not see jobs
  end. Being a gauge histogram, its counts drop when jobs are deleted; take quantiles of
  it directly rather than of its rate.

A record is read once after it has ended (ended records never change); only queued and
running jobs are read again at each scrape, by their status alone.

With several API processes (`eulerbench api --workers N`), each process writes its
latency observations to files in `PROMETHEUS_MULTIPROC_DIR`, and `/metrics` from any of
them sums the files of all, so one scrape reports the latency of every process.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from typing import Iterator

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from solvers.record import STATUSES, TERMINAL_STATUSES
from worker.celery_app import QUEUES
from worker.store import JobStore

logger = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SOLVE_BUCKETS_S = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3600.0)
# kombu's Redis transport keeps messages of priority p > 0 in the list `QUEUE\x06\x16p`.
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)
MGET_CHUNK = 500
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


class EndedJobs:
    """Status, basis, algorithm and solve time of every ended job seen so far, by id."""

    def __init__(self) -> None:
        self.by_id: dict[str, tuple[str, str, str, float | None]] = {}
        self.lock = threading.Lock()

    def refresh(self, store: JobStore) -> dict[str, int]:
        """Read the records that have not been seen ended; return the count of jobs by status."""
        with self.lock:
            return self._refresh(store)

    def _refresh(self, store: JobStore) -> dict[str, int]:
        ids = _job_ids(store)
        for gone in set(self.by_id) - set(ids):
            del self.by_id[gone]
        counts = dict.fromkeys(STATUSES, 0)
        unseen = [job_id for job_id in ids if job_id not in self.by_id]
        for start in range(0, len(unseen), MGET_CHUNK):
            chunk = unseen[start:start + MGET_CHUNK]
            for job_id, raw in zip(chunk, store.client.mget([f"{store.prefix}:job:{i}" for i in chunk])):
                if raw is None:
                    continue
                record = json.loads(raw)
                if record.get("status") in TERMINAL_STATUSES:
                    self.by_id[job_id] = _summary(record)
                elif record.get("status") in counts:
                    counts[record["status"]] += 1
        for status, _, _, _ in self.by_id.values():
            counts[status] += 1
        return counts


def _job_ids(store: JobStore) -> list[str]:
    """Return the id of every job in the store."""
    # NOTE: JobStore has no public method for all job ids or for raw records, so this
    # module reads its keys `P:jobs` and `P:job:ID` directly; methods on JobStore would
    # keep the key layout in one module.
    return store.client.zrange(f"{store.prefix}:jobs", 0, -1)


def _summary(record: dict) -> tuple[str, str, str, float | None]:
    """Return (status, basis kind, algorithm kind, solve seconds or None) of a raw record."""
    method = record.get("spec", {}).get("method", {})
    timings = record.get("timings") or {}
    solve_s = timings.get("solve_s")
    return (record["status"], str((method.get("basis") or {}).get("kind")),
            str((method.get("algorithm") or {}).get("kind")),
            float(solve_s) if isinstance(solve_s, (int, float)) else None)


class StoreCollector:
    """Collect the job and queue metrics from Redis at each scrape."""

    def __init__(self, store: JobStore):
        self.store = store
        self.ended = EndedJobs()

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        counts = self.ended.refresh(self.store)
        jobs = GaugeMetricFamily("eulerbench_jobs", "Jobs in the store by status.", labels=["status"])
        for status, count in counts.items():
            jobs.add_metric([status], count)
        yield jobs

        queues = GaugeMetricFamily("eulerbench_queue_length", "Messages waiting in each Celery queue.",
                                   labels=["queue"])
        for queue in QUEUES:
            queues.add_metric([queue], self._queue_length(queue))
        yield queues

        yield self._solve_histogram()
        logger.debug("metrics collected from Redis in %.3f s", time.perf_counter() - started)

    def _queue_length(self, queue: str) -> int:
        pipe = self.store.client.pipeline(transaction=False)
        pipe.llen(queue)
        for step in PRIORITY_STEPS:
            pipe.llen(f"{queue}{PRIORITY_SEPARATOR}{step}")
        return sum(pipe.execute())

    def _solve_histogram(self) -> GaugeHistogramMetricFamily:
        """Bucket the solve times of ended jobs by basis and algorithm."""
        groups: dict[tuple[str, str], list[float]] = {}
        family = GaugeHistogramMetricFamily(
            "eulerbench_job_solve_seconds", "Solve time (timings.solve_s) of ended jobs, by method.",
            labels=["basis", "algorithm"])
        with self.ended.lock:
            ended = list(self.ended.by_id.values())
        for _, basis, algorithm, solve_s in ended:
            if solve_s is not None:
                groups.setdefault((basis, algorithm), []).append(solve_s)
        for (basis, algorithm), values in sorted(groups.items()):
            buckets = [(str(bound), sum(v <= bound for v in values)) for bound in SOLVE_BUCKETS_S]
            buckets.append(("+Inf", len(values)))
            family.add_metric([basis, algorithm], buckets, gsum_value=sum(values))
        return family


class MetricsMiddleware:
    """Observe each HTTP request's latency by method, route template and status."""

    def __init__(self, app: ASGIApp, histogram: Histogram):
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.histogram.labels(scope["method"], route, str(status[0])).observe(
                time.perf_counter() - started)


def share_metrics_between_processes() -> str:
    """Make the API processes started after this call share their latency histograms,
    and return the folder through which they share them.

    A folder named in PROMETHEUS_MULTIPROC_DIR is used as it is, so its owner must empty
    it between runs. Otherwise a new folder is made and removed when this process exits.
    """
    folder = os.environ.get(MULTIPROCESS_ENV)
    if folder:
        os.makedirs(folder, exist_ok=True)
        return folder
    folder = tempfile.mkdtemp(prefix="eulerbench-metrics-")
    os.environ[MULTIPROCESS_ENV] = folder
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    logger.info("API processes share their metrics through %s", folder)
    return folder


def install_metrics(app: FastAPI) -> None:
    """Add the latency middleware and the `/metrics` route, with a registry of this app's own.

    When PROMETHEUS_MULTIPROC_DIR is set, the latency histogram sums those of every API process.
    """
    registry = CollectorRegistry()
    shared = bool(os.environ.get(MULTIPROCESS_ENV))
    latency = Histogram("eulerbench_api_request_duration_seconds", "API request latency.",
                        ["method", "route", "status"], buckets=LATENCY_BUCKETS_S,
                        registry=None if shared else registry)
    if shared:
        MultiProcessCollector(registry)
    registry.register(StoreCollector(app.state.store))
    app.add_middleware(MetricsMiddleware, histogram=latency)

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        """Return every metric in the Prometheus text format."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
