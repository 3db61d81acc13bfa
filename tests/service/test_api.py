"""The HTTP API with a real Celery worker process and a real Redis."""

import math
import time

import httpx
import pytest

from solvers.record import JobRecord
from solvers.spec import JobSpec
from tests.service.polling import wait_status
from worker.settings import get_settings
from worker.store import JobStore


@pytest.fixture(scope="module")
def client(stack):
    with httpx.Client(base_url=stack.api_url, timeout=30) as http:
        yield http


def test_healthz(client):
    reply = client.get("/healthz")
    assert reply.status_code == 200
    assert reply.json()["status"] == "ok"
    assert reply.json()["redis"] is True


def test_healthz_counts_live_workers(client):
    deadline = time.monotonic() + 30
    while client.get("/healthz").json()["workers"]["cpu"] < 1:
        assert time.monotonic() < deadline, "the worker never registered its heartbeat"
        time.sleep(0.5)
    assert client.get("/healthz").json()["workers"]["gpu"] == 0


def test_gpu_job_without_gpu_worker_rejected(client):
    reply = client.post("/v1/jobs", json={"method": {"basis": {"kind": "nn"}}, "device": "gpu"})
    assert reply.status_code == 409
    assert "no worker is consuming the gpu queue" in reply.json()["message"]


def test_job_solved_by_worker(client):
    reply = client.post("/v1/jobs", json={"label": "api test",
                                          "method": {"basis": {"kind": "chebyshev", "degree": 6}}})
    assert reply.status_code == 202
    job_id = reply.json()["id"]
    assert reply.json()["url"] == f"/v1/jobs/{job_id}"

    record = wait_status(client, job_id, {"succeeded", "failed", "diverged"})
    assert record["status"] == "succeeded"
    assert record["spec"]["model"]["params"]["beta"] == 0.99
    assert record["spec"]["method"]["algorithm"]["kind"] == "newton"
    assert record["errors"]["box"]["max_log10"] < -6
    assert record["errors"]["path"]["max_log10"] < -6
    assert record["errors"]["closed_form"] is None
    assert set(record["timings"]) == {"setup_s", "solve_s", "evaluate_s", "total_s", "solve_cpu_s"}
    assert record["n_params"] == 49
    assert record["n_conditions"] == 49
    assert record["converged"] is True
    assert record["iterations"] >= 1
    assert record["attempts"] == 1
    assert record["hardware"]["cpu_count"] >= 1
    assert "torch" in record["versions"]
    assert record["created_at"] <= record["started_at"] <= record["finished_at"]
    assert record["history"][0][0] == 0

    policy = client.get(f"/v1/jobs/{job_id}/policy").json()
    assert len(policy["theta"]) == 49


def test_invalid_spec_gets_422_naming_field(client):
    reply = client.post("/v1/jobs", json={"method": {"basis": {"kind": "chebyshev", "degree": 99}}})
    assert reply.status_code == 422
    [item] = reply.json()["detail"]
    assert item["field"] == "method.basis.degree"
    assert item["input"] == 99
    assert "1 <= value <= 40" in item["msg"]
    assert "method.basis.degree" in reply.json()["message"]


def test_unknown_key_lists_valid_fields(client):
    reply = client.post("/v1/jobs", json={"model": {"params": {"bta": 0.9}},
                                          "method": {"basis": {"kind": "spline"}}})
    assert reply.status_code == 422
    [item] = reply.json()["detail"]
    assert item["field"] == "model.params.bta"
    assert "valid fields: alpha, beta" in item["msg"]


def test_malformed_json_gets_422(client):
    reply = client.post("/v1/jobs", content=b"{not json", headers={"content-type": "application/json"})
    assert reply.status_code == 422


def test_unknown_job_404(client):
    assert client.get("/v1/jobs/does-not-exist").status_code == 404
    assert client.post("/v1/jobs/does-not-exist/cancel").status_code == 404
    reply = client.get("/v1/jobs/" + "0" * 32)
    assert reply.status_code == 404
    assert reply.json()["message"] == f"job {'0' * 32} not found"


def test_policy_key_is_not_a_job(client):
    job_id = client.post("/v1/jobs", json={"method": {"basis": {"kind": "chebyshev", "degree": 3}}}).json()["id"]
    wait_status(client, job_id, {"succeeded"})
    assert client.get(f"/v1/jobs/{job_id}:policy").status_code == 404
    assert client.delete(f"/v1/jobs/{job_id}:policy").status_code == 404


def test_non_json_body_gets_415(client):
    reply = client.post("/v1/jobs", content=b'{"method": {}}', headers={"content-type": "text/plain"})
    assert reply.status_code == 415
    assert "application/json" in reply.json()["message"]


def test_long_invalid_input_not_echoed_whole(client):
    reply = client.post("/v1/jobs", json={"label": "x" * 100_000, "method": {"basis": {"kind": "chebyshev"}}})
    assert reply.status_code == 422
    assert len(reply.content) < 5_000


def test_missing_kind_lists_choices(client):
    reply = client.post("/v1/jobs", json={"method": {"basis": {"degree": 4}}})
    assert reply.status_code == 422
    [item] = reply.json()["detail"]
    assert item["field"] == "method.basis"
    assert "valid choices: monomial, chebyshev, spline, grid, nn" in item["msg"]


def test_query_range_names_both_bounds(client):
    reply = client.get("/v1/jobs", params={"limit": 0})
    assert reply.status_code == 422
    assert "1 <= value <= 500" in reply.json()["message"]


def test_list_filters(client):
    ids = [client.post("/v1/jobs", json={"method": {"basis": {"kind": kind, **extra}}}).json()["id"]
           for kind, extra in (("chebyshev", {"degree": 3}), ("spline", {"n_basis": 6}))]
    for job_id in ids:
        wait_status(client, job_id, {"succeeded"})
    page = client.get("/v1/jobs", params={"basis": "spline", "limit": 500}).json()
    assert ids[1] in [item["id"] for item in page["items"]]
    assert all(item["spec"]["method"]["basis"]["kind"] == "spline" for item in page["items"])
    page = client.get("/v1/jobs", params={"limit": 1}).json()
    assert len(page["items"]) == 1
    assert page["total"] >= 2
    assert client.get("/v1/jobs", params={"status": "bogus"}).status_code == 422


def queued_job(stack):
    """Create a queued record that no message points to, marked as sent so that the sweeper
    does not send one, so it stays queued."""
    store = JobStore.from_url(stack.redis_url, get_settings().key_prefix)
    record = store.create(JobSpec.model_validate({"method": {"basis": {"kind": "nn"}}}))
    store.mark_sent(record.id)
    return store, record.id


def test_queued_job_cancelled_and_deleted(client, stack):
    _, job_id = queued_job(stack)
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 409
    reply = client.post(f"/v1/jobs/{job_id}/cancel")
    assert reply.status_code == 200
    assert reply.json()["status"] == "cancelled"
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 409
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert client.get(f"/v1/jobs/{job_id}").status_code == 404


def test_running_job_cancelled(client):
    job_id = client.post("/v1/jobs", json={"method": {"basis": {"kind": "nn"},
                                                      "algorithm": {"kind": "adam", "steps": 1_000_000}}}).json()["id"]
    wait_status(client, job_id, {"running"})
    reply = client.post(f"/v1/jobs/{job_id}/cancel")
    assert reply.status_code == 202
    assert reply.json()["status"] == "running"
    record = wait_status(client, job_id, {"cancelled", "succeeded", "failed"}, timeout_s=60)
    assert record["status"] == "cancelled"
    assert record["iterations"] >= 0


def test_time_limit_gives_timed_out(client):
    job_id = client.post("/v1/jobs", json={"method": {"basis": {"kind": "nn"},
                                                      "algorithm": {"kind": "adam", "steps": 1_000_000}},
                                           "time_limit_s": 6}).json()["id"]
    record = wait_status(client, job_id, {"timed_out", "succeeded", "failed"}, timeout_s=90)
    assert record["status"] == "timed_out"
    assert record["iterations"] > 0
    assert record["progress"]["iteration"] == record["iterations"]
    assert "time limit" in record["error"]


def test_non_finite_floats_through_api(client, stack):
    store, job_id = queued_job(stack)
    errors = {"box": {"max_log10": float("-inf"), "mean_log10": float("nan")},
              "path": {"max_log10": float("inf"), "mean_log10": 0.0, "share_outside_box": 1.0}}
    store.finish(job_id, "diverged", {"errors": errors, "error": "test"})
    reply = client.get(f"/v1/jobs/{job_id}")
    assert reply.status_code == 200
    assert reply.json()["errors"]["box"]["max_log10"] == "-Infinity"
    record = JobRecord.model_validate_json(reply.content)
    assert record.errors.path.max_log10 == math.inf
    assert math.isnan(record.errors.box.mean_log10)
    listed = client.get("/v1/jobs", params={"status": "diverged"})
    assert listed.status_code == 200


def test_openapi_docs(client):
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert "/v1/jobs" in schema["paths"]


def test_catalogue_endpoint(client):
    reply = client.get("/v1/catalogue")
    assert reply.status_code == 200
    catalogue = reply.json()
    assert "growth" in catalogue["models"]
    assert {"basis": "spline", "residual": "euler", "objective": "galerkin", "algorithm": "newton"} in catalogue["combinations"]


def test_invalid_combination_gets_422_with_choices(client):
    reply = client.post("/v1/jobs", json={"method": {"basis": {"kind": "nn"}, "objective": {"kind": "galerkin"}}})
    assert reply.status_code == 422
    [item] = reply.json()["detail"]
    assert item["field"] == "method"
    assert "valid choices: sampled_mse" in item["msg"]


def test_savings_job_over_http(client):
    reply = client.post("/v1/jobs", json={"model": {"name": "savings"},
                                          "method": {"basis": {"kind": "spline", "n_basis": 40, "knots": "kink"}}})
    assert reply.status_code == 202
    record = wait_status(client, reply.json()["id"], {"succeeded", "failed", "diverged"})
    assert record["status"] == "succeeded"
    assert record["errors"]["path"]["n_binding"] > 0
    assert record["errors"]["closed_form"] is None
    listed = client.get("/v1/jobs", params={"model": "savings"}).json()
    assert record["id"] in [item["id"] for item in listed["items"]]


def evaluate_job_policy(client, job_id, params=None):
    return client.post("/v1/jobs", json={"model": {"params": params or {}}, "method": {
        "basis": {"kind": "chebyshev", "degree": 10},
        "residual": {"kind": "policy_evaluation", "policy": {"kind": "job", "job_id": job_id}}}})


def test_policy_of_finished_job_evaluated_by_id(client):
    closed_form = {"gamma": 1, "delta": 1}
    source = client.post("/v1/jobs", json={"model": {"params": closed_form},
                                           "method": {"basis": {"kind": "chebyshev", "degree": 10}}})
    source_record = wait_status(client, source.json()["id"], {"succeeded", "failed", "diverged"})
    assert source_record["status"] == "succeeded"

    reply = evaluate_job_policy(client, source_record["id"], closed_form)
    assert reply.status_code == 202
    record = wait_status(client, reply.json()["id"], {"succeeded", "failed", "diverged"})
    assert record["status"] == "succeeded", record["error"]
    assert record["iterations"] == 1
    assert record["diagnostics"]["value_closed_form_max_rel_distance"] < 1e-6
    assert record["errors"]["box"] == source_record["errors"]["box"]


def test_policy_by_id_rejected_before_queueing(client, stack):
    unknown = evaluate_job_policy(client, "0" * 32)
    assert unknown.status_code == 422
    [item] = unknown.json()["detail"]
    assert item["field"] == "method.residual.policy.job_id"
    assert f"no job has id {'0' * 32}" in item["msg"]

    source = client.post("/v1/jobs", json={"method": {"basis": {"kind": "chebyshev", "degree": 4}}}).json()["id"]
    wait_status(client, source, {"succeeded"})
    other_model = evaluate_job_policy(client, source, {"gamma": 3})
    assert other_model.status_code == 422
    assert "other parameters" in other_model.json()["message"]

    store = JobStore.from_url(stack.redis_url, get_settings().key_prefix)
    failed = store.create(JobSpec.model_validate({"method": {"basis": {"kind": "chebyshev", "degree": 4}}}))
    store.finish(failed.id, "failed", {"error": "made to fail by the test"})
    unfinished = evaluate_job_policy(client, failed.id)
    assert unfinished.status_code == 422
    assert "only the policy of a succeeded job" in unfinished.json()["message"]


def test_auto_device_routes_to_live_gpu_worker(client, stack):
    store = JobStore.from_url(stack.redis_url, get_settings().key_prefix)
    broker = store.client
    spec = {"method": {"basis": {"kind": "nn"}}, "device": "auto"}

    # With no gpu worker, an 'auto' network job goes to the cpu queue like any other.
    cpu_job = client.post("/v1/jobs", json=spec).json()["id"]
    client.post(f"/v1/jobs/{cpu_job}/cancel")
    assert broker.llen("gpu") == 0

    # A live heartbeat on the gpu queue sends the next one there.
    store.register_worker("test-gpu-worker", ["gpu"], ttl_s=30)
    try:
        gpu_job = client.post("/v1/jobs", json=spec).json()["id"]
        assert broker.llen("gpu") == 1
        assert gpu_job in broker.lindex("gpu", 0)
    finally:
        store.unregister_worker("test-gpu-worker", ["gpu"])
        broker.delete("gpu")
        client.post(f"/v1/jobs/{gpu_job}/cancel")
