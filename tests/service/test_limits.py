"""Limits set in the service's settings, checked on the app object with a real Redis."""

from fastapi.testclient import TestClient

from service.app import create_app
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
