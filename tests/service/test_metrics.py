"""Prometheus metrics at /metrics over real HTTP, with a Redis of the test's own."""

import re

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from solvers.spec import JobSpec
from tests.service.api_server import api_server
from worker.settings import Settings
from worker.store import JobStore

SPEC = {"method": {"basis": {"kind": "chebyshev", "degree": 2}}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with api_server({}, tmp_path_factory.mktemp("metrics-api")) as (url, redis_url):
        with httpx.Client(base_url=url, timeout=30) as http:
            yield http, JobStore.from_url(redis_url, Settings().key_prefix)


def scrape(client):
    reply = client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(reply.text) for sample in family.samples}


def test_jobs_by_status_and_queue_depth(server):
    client, _ = server
    for _ in range(3):
        assert client.post("/v1/jobs", json=SPEC).status_code == 202
    samples = scrape(client)
    assert samples[("eulerbench_jobs", (("status", "queued"),))] == 3
    assert samples[("eulerbench_jobs", (("status", "succeeded"),))] == 0
    assert samples[("eulerbench_queue_length", (("queue", "cpu"),))] == 3
    assert samples[("eulerbench_queue_length", (("queue", "gpu"),))] == 0


def test_solve_time_histogram_by_method(server):
    client, store = server
    for solve_s in (0.02, 0.5, 2.0):
        job = store.create(JobSpec.model_validate(SPEC))
        timings = {"setup_s": 0.0, "solve_s": solve_s, "evaluate_s": 0.1, "total_s": solve_s + 0.1,
                   "solve_cpu_s": solve_s}
        store.finish(job.id, "succeeded", {"timings": timings})
    samples = scrape(client)
    labels = (("algorithm", "newton"), ("basis", "chebyshev"))
    assert samples[("eulerbench_job_solve_seconds_gcount", labels)] == 3
    assert samples[("eulerbench_job_solve_seconds_gsum", labels)] == pytest.approx(2.52)
    assert samples[("eulerbench_job_solve_seconds_bucket", labels + (("le", "0.03"),))] == 1
    assert samples[("eulerbench_job_solve_seconds_bucket", labels + (("le", "1.0"),))] == 2
    assert samples[("eulerbench_jobs", (("status", "succeeded"),))] == 3


def test_api_latency_by_route_template(server):
    client, _ = server
    client.get(f"/v1/jobs/{'0' * 32}")
    samples = scrape(client)
    key = ("eulerbench_api_request_duration_seconds_count",
           (("method", "GET"), ("route", "/v1/jobs/{job_id}"), ("status", "404")))
    assert samples[key] >= 1
    assert not any("0" * 32 in str(labels) for _, labels in samples)


def test_every_api_process_counts_in_one_scrape(tmp_path):
    key = ("eulerbench_api_request_duration_seconds_count",
           (("method", "POST"), ("route", "/v1/jobs"), ("status", "202")))
    with api_server({}, tmp_path, workers=2) as (url, _):
        for _ in range(20):
            with httpx.Client(base_url=url, timeout=30) as fresh:
                assert fresh.post("/v1/jobs", json=SPEC).status_code == 202
        for _ in range(6):
            with httpx.Client(base_url=url, timeout=30) as fresh:
                assert scrape(fresh)[key] == 20
        logs = "".join(path.read_text() for path in tmp_path.glob("api-*.log"))
        pids = set(re.findall(r"Started server process \[(\d+)\]", logs))
    assert len(pids) == 2
