"""Load test: many short jobs from concurrent clients, then count the lost and the doubled.

    python benchmarks/load.py                      # embedded stack, 2 worker processes
    python benchmarks/load.py --url http://HOST:8000 --key KEY

Without --url it starts a private in-memory redis-server and the embedded stack (the API
with --api-workers processes, one Celery worker with --workers processes) on 127.0.0.1,
and stops them at the end. Each of --clients threads submits its share of --jobs
Chebyshev jobs of degree 2 or 3 over one kept-alive connection of its own, each with an
Idempotency-Key, so a submission retried after a network error cannot create a second
job. The clients use the standard library's http.client: on a machine that also runs
the service, a heavier client would spend CPU that the service's latency then counts.
The script then waits for every job to end and prints:

- submit latency (p50, p95, p99) in ms, from the client's send to the reply;
- throughput in jobs/s, of submission (over the submission phase) and of completion
  (from the first submission to the last job's end);
- jobs that succeeded, ended otherwise, were lost (accepted but no record), were not
  ended by --timeout, and ran twice (`attempts` > 1: a worker started them more than once).

Exits 0 when every job succeeded once and none was lost.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import signal
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.embedded import start_redis, start_stack  # noqa: E402
from solvers.record import TERMINAL_STATUSES  # noqa: E402

logger = logging.getLogger("load")

SUBMIT_RETRIES = 3
POLL_S = 5.0  # seconds between rounds of reading the unended records


@dataclass
class Submissions:
    """Requests the clients sent and replies they got, shared by their threads."""

    latencies_s: list[float] = field(default_factory=list)
    ids: dict[int, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def job_spec(index: int) -> dict:
    """Return a short job: Chebyshev of degree 2 or 3 on the default growth model."""
    return {"label": f"load {index}",
            "method": {"basis": {"kind": "chebyshev", "degree": 2 + index % 2},
                       "algorithm": {"kind": "newton", "max_iterations": 20}},
            "time_limit_s": 60}


def connect(url: str) -> http.client.HTTPConnection:
    """Return a connection (kept alive between requests) to the service at url."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SystemExit(f"error: --url must be http://HOST[:PORT] or https://HOST[:PORT]; got {url!r}")
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return kind(parts.hostname, parts.port, timeout=30)


def submit_share(url: str, headers: dict, indices: range, run_id: str, out: Submissions) -> None:
    """Submit the jobs of indices one after another, as one client."""
    connection = connect(url)
    try:
        for index in indices:
            body = json.dumps(job_spec(index)).encode()
            request_headers = {**headers, "Content-Type": "application/json",
                               "Idempotency-Key": f"load-{run_id}-{index}"}
            for attempt in range(1, SUBMIT_RETRIES + 1):
                started = time.perf_counter()
                try:
                    connection.request("POST", "/v1/jobs", body=body, headers=request_headers)
                    reply = connection.getresponse()
                    text = reply.read().decode()
                except (OSError, http.client.HTTPException) as exc:
                    logger.warning("job %d: submission attempt %d failed: %s", index, attempt, exc)
                    connection.close()
                    continue
                elapsed = time.perf_counter() - started
                with out.lock:
                    out.latencies_s.append(elapsed)
                    if reply.status == 202:
                        out.ids[index] = json.loads(text)["id"]
                    else:
                        out.errors.append(f"job {index}: HTTP {reply.status}: {text[:200]}")
                break
    finally:
        connection.close()


def submit_all(url: str, headers: dict, n_jobs: int, n_clients: int) -> tuple[Submissions, float]:
    """Submit n_jobs from n_clients threads; return what came back and the wall time."""
    out, run_id = Submissions(), uuid.uuid4().hex[:8]
    shares = [range(c, n_jobs, n_clients) for c in range(n_clients)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n_clients) as pool:
        for future in [pool.submit(submit_share, url, headers, share, run_id, out) for share in shares]:
            future.result()
    return out, time.perf_counter() - started


def wait_all(url: str, headers: dict, ids: list[str], timeout_s: float, n_clients: int) -> dict[str, dict | None]:
    """Poll the records until every job has ended or timeout_s passes; return the last
    record read of each job (None when it was not found, so lost)."""
    records: dict[str, dict | None] = {}
    pending = list(ids)
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, headers=headers, timeout=30,
                      limits=httpx.Limits(max_connections=n_clients)) as client:

        def read(job_id: str) -> tuple[str, dict | None]:
            reply = client.get(f"/v1/jobs/{job_id}")
            return job_id, (reply.json() if reply.status_code == 200 else None)

        with ThreadPoolExecutor(max_workers=n_clients) as pool:
            while pending and time.monotonic() < deadline:
                records.update(pool.map(read, pending))
                pending = [i for i in pending if (records[i] or {}).get("status") not in TERMINAL_STATUSES]
                if pending:
                    print(f"\r{len(ids) - len(pending)} of {len(ids)} jobs ended", end="", file=sys.stderr)
                    time.sleep(POLL_S)
    print(file=sys.stderr)
    return records


def percentile(values: list[float], q: float) -> float:
    """Return the q-th percentile (0-100) of values, by linear interpolation."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def report_submissions(n_jobs: int, out: Submissions, submit_s: float) -> None:
    """Print the submission figures, as soon as the submission phase ends."""
    latencies_ms = [s * 1000 for s in out.latencies_s]
    print(f"jobs submitted:            {len(out.ids)} of {n_jobs} ({len(out.errors)} rejected)")
    if latencies_ms:
        print(f"submit latency ms:         p50 {percentile(latencies_ms, 50):.1f}  "
              f"p95 {percentile(latencies_ms, 95):.1f}  p99 {percentile(latencies_ms, 99):.1f}  "
              f"max {max(latencies_ms):.1f}")
    print(f"submission throughput:     {len(out.ids) / submit_s:.1f} jobs/s ({submit_s:.1f} s)",
          flush=True)


def report(n_jobs: int, out: Submissions, records: dict[str, dict | None], first_submit: float) -> bool:
    """Print the completion figures; return True when every job succeeded exactly once."""
    ended = [r for r in records.values() if r and r.get("status") in TERMINAL_STATUSES]
    succeeded = sum(r["status"] == "succeeded" for r in ended)
    missing = sum(record is None for record in records.values())
    unended = len(records) - missing - len(ended)
    twice = sum(r.get("attempts", 0) > 1 for r in records.values() if r)
    last_end = max((r["finished_at"] for r in ended), default=None)
    if last_end is not None:
        from datetime import datetime

        span_s = datetime.fromisoformat(last_end).timestamp() - first_submit
        print(f"completion throughput:     {len(ended) / span_s:.1f} jobs/s "
              f"({span_s:.1f} s from the first submission to the last end)")
    others = {}
    for record in ended:
        if record["status"] != "succeeded":
            others[record["status"]] = others.get(record["status"], 0) + 1
    print(f"succeeded:                 {succeeded} of {n_jobs}")
    print(f"ended otherwise:           {others or 0}")
    print(f"lost (no record):          {missing}")
    print(f"not ended by --timeout:    {unended}")
    print(f"run twice (attempts > 1):  {twice}")
    for error in out.errors[:5]:
        print(f"  {error}")
    return succeeded == n_jobs and missing == 0 and unended == 0 and twice == 0


def positive(text: str) -> int:
    """Parse a count for the options below: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}; use a whole number >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"count {value} is out of range; use a whole number >= 1")
    return value


def stop_on_sigterm(signum: int, frame: object) -> None:
    """Turn SIGTERM into KeyboardInterrupt, so that the embedded stack is stopped too."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="A running service; default: start the embedded stack.")
    parser.add_argument("--key", default=os.environ.get("EULERBENCH_API_KEY"),
                        help="API key for a service that requires one (default: EULERBENCH_API_KEY).")
    parser.add_argument("--jobs", type=positive, default=1000, help="Jobs to submit (default: 1000).")
    parser.add_argument("--clients", type=positive, default=20, help="Concurrent clients (default: 20).")
    parser.add_argument("--workers", type=positive, default=2,
                        help="Worker processes of the embedded stack (default: 2).")
    parser.add_argument("--api-workers", type=positive, default=2,
                        help="API processes of the embedded stack (default: 2).")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="Seconds to wait for every job to end (default: 3600).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    signal.signal(signal.SIGTERM, stop_on_sigterm)

    stack = redis_process = None
    url = args.url
    if url is None:
        redis_url, redis_process = start_redis()
        stack = start_stack(redis_url, concurrency=args.workers, api_workers=args.api_workers)
        url = stack.api_url
        print(f"embedded stack at {url}, {args.api_workers} API and {args.workers} worker "
              f"processes, logs in {stack.log_dir}", file=sys.stderr)
    try:
        first_submit = time.time()
        out, submit_s = submit_all(url, headers, args.jobs, args.clients)
        report_submissions(args.jobs, out, submit_s)
        records = wait_all(url, headers, list(out.ids.values()), args.timeout, args.clients)
        ok = report(args.jobs, out, records, first_submit)
    except KeyboardInterrupt:
        print("interrupted; stopping the embedded stack", file=sys.stderr)
        ok = False
    finally:
        if stack is not None:
            stack.stop()
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(timeout=20)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
