"""Idempotency-Key on POST /v1/jobs over real HTTP, with a Redis of the test's own."""

from concurrent.futures import ThreadPoolExecutor

import httpx
import redis
import pytest

from tests.service.api_server import api_server

SPEC = {"method": {"basis": {"kind": "chebyshev", "degree": 2}}}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with api_server({}, tmp_path_factory.mktemp("idempotency-api")) as (url, _):
        with httpx.Client(base_url=url, timeout=30) as http:
            yield http


def total_jobs(client):
    return client.get("/v1/jobs", params={"limit": 1}).json()["total"]


def test_retry_returns_same_job(client):
    before = total_jobs(client)
    first = client.post("/v1/jobs", json=SPEC, headers={"Idempotency-Key": "retry-1"})
    again = client.post("/v1/jobs", json=SPEC, headers={"Idempotency-Key": "retry-1"})
    assert first.status_code == 202
    assert again.status_code == 202
    assert again.json() == first.json()
    assert total_jobs(client) == before + 1


def test_same_key_other_body_rejected(client):
    client.post("/v1/jobs", json=SPEC, headers={"Idempotency-Key": "retry-2"})
    other = {"method": {"basis": {"kind": "chebyshev", "degree": 3}}}
    reply = client.post("/v1/jobs", json=other, headers={"Idempotency-Key": "retry-2"})
    assert reply.status_code == 422
    [item] = reply.json()["detail"]
    assert item["field"] == "Idempotency-Key"
    assert "different request body" in item["msg"]


def test_defaults_spelled_out_count_as_same_body(client):
    first = client.post("/v1/jobs", json=SPEC, headers={"Idempotency-Key": "retry-3"}).json()
    explicit = {"method": {"basis": {"kind": "chebyshev", "degree": 2}}, "seed": 0, "device": "cpu"}
    assert client.post("/v1/jobs", json=explicit, headers={"Idempotency-Key": "retry-3"}).json() == first


def test_concurrent_retries_create_one_job(client):
    before = total_jobs(client)
    with ThreadPoolExecutor(max_workers=10) as pool:
        replies = list(pool.map(lambda _: client.post("/v1/jobs", json=SPEC,
                                                      headers={"Idempotency-Key": "burst"}), range(10)))
    assert {reply.status_code for reply in replies} == {202}
    assert len({reply.json()["id"] for reply in replies}) == 1
    assert total_jobs(client) == before + 1


def test_without_key_each_post_is_new_job(client):
    ids = {client.post("/v1/jobs", json=SPEC).json()["id"] for _ in range(2)}
    assert len(ids) == 2


def test_invalid_key_rejected(client):
    reply = client.post("/v1/jobs", json=SPEC, headers={"Idempotency-Key": "a" * 256})
    assert reply.status_code == 422
    assert "Idempotency-Key" in reply.json()["message"]


def test_rejected_submission_does_not_keep_key(client):
    bad = {"method": {"basis": {"kind": "chebyshev"}}, "time_limit_s": 10 ** 9}
    assert client.post("/v1/jobs", json=bad, headers={"Idempotency-Key": "retry-4"}).status_code == 422
    reply = client.post("/v1/jobs", json=SPEC, headers={"Idempotency-Key": "retry-4"})
    assert reply.status_code == 202


def test_sweep_retry_returns_same_sweep(client):
    sweep = {"base": {"method": {"basis": {"kind": "chebyshev"}}}, "grid": {"method.basis.degree": [2, 3]}}
    first = client.post("/v1/sweeps", json=sweep, headers={"Idempotency-Key": "sweep-1"})
    again = client.post("/v1/sweeps", json=sweep, headers={"Idempotency-Key": "sweep-1"})
    assert first.status_code == 202
    assert again.json() == first.json()
    assert client.get("/v1/sweeps").json()["total"] == 1
    other = {**sweep, "grid": {"method.basis.degree": [2, 4]}}
    assert client.post("/v1/sweeps", json=other, headers={"Idempotency-Key": "sweep-1"}).status_code == 422


def test_broker_failure_releases_key(tmp_path):
    with api_server({}, tmp_path) as (url, redis_url):
        redis_client = redis.Redis.from_url(redis_url)
        with httpx.Client(base_url=url, timeout=30) as http:
            redis_client.execute_command("ACL", "SETUSER", "default", "-lpush")
            refused = http.post("/v1/jobs", json=SPEC, headers={"Idempotency-Key": "refused"})
            redis_client.execute_command("ACL", "SETUSER", "default", "+lpush")
            accepted = http.post("/v1/jobs", json=SPEC, headers={"Idempotency-Key": "refused"})
            assert refused.status_code == 503
            assert accepted.status_code == 202
            jobs = http.get("/v1/jobs").json()["items"]
    assert [job["status"] for job in jobs] == ["queued", "failed"]
    assert jobs[0]["id"] == accepted.json()["id"]
    assert "could not be queued" in jobs[1]["error"]
