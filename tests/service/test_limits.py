"""Limits set in the service's settings, checked on the app object with a real Redis."""

import httpx
from fastapi.testclient import TestClient

from service.app import create_app
from tests.service.api_server import api_server
from worker.settings import Settings


def test_time_limit_over_service_maximum_rejected(redis_url, key_prefix):
    app = create_app(Settings(redis_url=redis_url, key_prefix=key_prefix, max_time_limit_s=30))
    with TestClient(app) as client:
        reply = client.post("/v1/jobs", json={"method": {"basis": {"kind": "chebyshev"}},
                                              "time_limit_s": 60})
    assert reply.status_code == 422
    [item] = reply.json()["detail"]
    assert item["field"] == "time_limit_s"
    assert "limit of 30 s" in item["msg"]
    assert app.state.store.list()[1] == 0


def chunks(size, chunk=1000):
    """Yield size bytes of a JSON string in pieces, so httpx sends them chunked."""
    yield b'{"label": "'
    for _ in range(size // chunk):
        yield b"x" * chunk
    yield b'", "method": {"basis": {"kind": "chebyshev"}}}'


def test_body_over_limit_by_content_length_gets_413(redis_url, key_prefix):
    app = create_app(Settings(redis_url=redis_url, key_prefix=key_prefix, max_request_bytes=5_000))
    with TestClient(app) as client:
        reply = client.post("/v1/jobs", json={"label": "x" * 6_000, "method": {"basis": {"kind": "chebyshev"}}})
    assert reply.status_code == 413
    assert "limit of 5000 bytes" in reply.json()["message"]
    assert "6" in reply.json()["message"].split(" bytes")[0]
    assert app.state.store.list()[1] == 0


def test_chunked_body_over_limit_gets_413(redis_url, key_prefix):
    app = create_app(Settings(redis_url=redis_url, key_prefix=key_prefix, max_request_bytes=5_000))
    with TestClient(app) as client:
        reply = client.post("/v1/jobs", content=chunks(20_000), headers={"content-type": "application/json"})
    assert reply.status_code == 413
    assert "limit of 5000 bytes" in reply.json()["message"]
    assert app.state.store.list()[1] == 0


def test_body_under_limit_accepted(redis_url, key_prefix):
    app = create_app(Settings(redis_url=redis_url, key_prefix=key_prefix, max_request_bytes=5_000))
    with TestClient(app) as client:
        reply = client.post("/v1/jobs", content=chunks(100, chunk=20), headers={"content-type": "application/json"})
    assert reply.status_code == 202


def test_413_over_real_http(tmp_path):
    with api_server({"EULERBENCH_MAX_REQUEST_BYTES": "5000"}, tmp_path) as (url, _):
        with httpx.Client(base_url=url, timeout=30) as client:
            declared = client.post("/v1/jobs", content=b"x" * 6_000, headers={"content-type": "application/json"})
            chunked = client.post("/v1/jobs", content=chunks(200_000), headers={"content-type": "application/json"})
            health = client.get("/healthz")
    assert declared.status_code == 413
    assert declared.json()["message"] == "the request body is 6000 bytes, over this service's limit of 5000 bytes"
    assert chunked.status_code == 413
    assert "limit of 5000 bytes" in chunked.json()["message"]
    assert "without Content-Length" in chunked.json()["message"]
    assert health.status_code == 200
