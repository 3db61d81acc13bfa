"""API keys over real HTTP: an API process with keys configured, on a Redis of its own."""

import os
import re
import subprocess
import sys

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import hash_key, is_loopback
from service.embedded import api_command, free_port
from tests.service.api_server import api_server
from worker.settings import Settings

KEYS = {"alice": "alice-key-0123456789", "bob": "bob-key-0123456789", "*": "admin-key-0123456789"}
SPEC = {"method": {"basis": {"kind": "chebyshev", "degree": 2}}}


def auth(name):
    return {"Authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("auth-api")
    entries = ",".join(f"{name}:{hash_key(key)}" for name, key in KEYS.items())
    with api_server({"EULERBENCH_API_KEYS": entries}, log_dir) as (url, _):
        yield url, log_dir


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], timeout=30) as http:
        yield http


def state_changing_operations(client):
    """Every (method, path) of the OpenAPI schema other than GET and HEAD, ids filled in."""
    paths = client.get("/openapi.json").json()["paths"]
    return [(method.upper(), re.sub(r"\{[^}]+\}", "0" * 32, path))
            for path, operations in paths.items() for method in operations
            if method.upper() not in ("GET", "HEAD")]


def test_state_changing_requests_without_key_get_401(client):
    operations = state_changing_operations(client)
    assert ("POST", "/v1/jobs") in operations
    assert ("POST", f"/v1/jobs/{'0' * 32}/cancel") in operations
    assert ("DELETE", f"/v1/jobs/{'0' * 32}") in operations
    for method, path in operations:
        reply = client.request(method, path, json=SPEC)
        assert reply.status_code == 401, (method, path, reply.text)
        assert reply.headers["www-authenticate"] == "Bearer"
        assert "API key" in reply.json()["message"]


def test_reads_need_key_when_keys_configured(client):
    assert client.get("/v1/jobs").status_code == 401
    assert client.get("/metrics").status_code == 401
    assert client.get("/v1/jobs", headers=auth("bob")).status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/openapi.json").status_code == 200


def test_unknown_key_rejected_and_not_logged(client, server):
    secret = "not-a-configured-key-5e1f"
    reply = client.post("/v1/jobs", json=SPEC, headers={"X-API-Key": secret})
    assert reply.status_code == 401
    assert reply.json()["message"] == "the API key is not valid"
    reply = client.get("/v1/jobs", headers={"Authorization": f"Bearer {secret}"})
    assert reply.status_code == 401
    logs = "".join(path.read_text() for path in server[1].glob("*.log"))
    assert "authentication failed: unknown API key" in logs
    assert secret not in logs


def test_submitter_recorded_and_cancel_scoped(client):
    reply = client.post("/v1/jobs", json=SPEC, headers=auth("alice"))
    assert reply.status_code == 202
    job_id = reply.json()["id"]
    assert client.get(f"/v1/jobs/{job_id}", headers=auth("alice")).json()["submitter"] == "alice"

    refused = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth("bob"))
    assert refused.status_code == 403
    assert f"cancel job {job_id}" in refused.json()["message"]
    assert client.get(f"/v1/jobs/{job_id}", headers=auth("bob")).json()["status"] == "queued"

    cancelled = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth("alice"))
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert client.delete(f"/v1/jobs/{job_id}", headers=auth("bob")).status_code == 403


def test_admin_key_cancels_and_deletes_any_job(client):
    job_id = client.post("/v1/jobs", json=SPEC, headers=auth("bob")).json()["id"]
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=auth("*")).status_code == 200
    assert client.delete(f"/v1/jobs/{job_id}", headers=auth("*")).status_code == 204
    assert client.get(f"/v1/jobs/{job_id}", headers=auth("bob")).status_code == 404


def test_public_reads_leave_writes_authenticated(redis_url, key_prefix):
    settings = Settings(redis_url=redis_url, key_prefix=key_prefix, public_reads=True,
                        api_keys=[f"alice:{hash_key(KEYS['alice'])}"])
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/jobs").status_code == 200
        assert client.post("/v1/jobs", json=SPEC).status_code == 401
        assert client.get("/v1/jobs", headers={"X-API-Key": "wrong"}).status_code == 401


def test_api_refuses_public_address_without_key(tmp_path):
    env = {name: value for name, value in os.environ.items() if name != "EULERBENCH_API_KEYS"}
    command = api_command("0.0.0.0", free_port())
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "refusing to serve on 0.0.0.0: no API key is configured" in done.stderr


def test_key_new_prints_matching_entry():
    done = subprocess.run([sys.executable, "-m", "service.cli", "key", "new", "carol"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    key = re.search(r"stored anywhere\): (\S+)", done.stdout).group(1)
    entry = re.search(r"entry .*: (\S+)", done.stdout).group(1)
    assert entry == f"carol:{hash_key(key)}"
    assert Settings(api_keys=entry).api_keys == [entry]


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.3.0.1", True), ("::1", True),
                                            ("localhost", True), ("0.0.0.0", False),
                                            ("192.168.1.5", False), ("example.org", False)])
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


def test_sweep_cancel_scoped_to_submitter(client):
    sweep = {"base": SPEC, "grid": {"method.basis.degree": [2, 3]}}
    reply = client.post("/v1/sweeps", json=sweep, headers=auth("alice"))
    assert reply.status_code == 202
    sweep_id = reply.json()["id"]
    assert client.delete(f"/v1/sweeps/{sweep_id}", headers=auth("bob")).status_code == 403
    assert client.delete(f"/v1/sweeps/{sweep_id}", headers=auth("alice")).status_code == 200


def run_cli(*args, env=None):
    environment = {key: value for key, value in os.environ.items() if key != "EULERBENCH_API_KEY"}
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True, text=True,
                          env={**environment, **(env or {})}, timeout=120)


def test_cli_sends_key_from_option_or_environment(server, client, tmp_path):
    url = server[0]
    without = run_cli("jobs", "--url", url)
    assert without.returncode == 3
    assert "HTTP 401" in without.stderr
    assert "--key" in without.stderr
    assert run_cli("jobs", "--url", url, "--key", KEYS["alice"]).returncode == 0
    assert run_cli("jobs", "--url", url, env={"EULERBENCH_API_KEY": KEYS["alice"]}).returncode == 0

    job_id = client.post("/v1/jobs", json=SPEC, headers=auth("alice")).json()["id"]
    refused = run_cli("cancel", job_id, "--url", url, "--key", KEYS["bob"])
    assert refused.returncode == 3
    assert "HTTP 403" in refused.stderr
    assert run_cli("cancel", job_id, "--url", url, "--key", KEYS["alice"]).returncode == 0
    assert client.get(f"/v1/jobs/{job_id}", headers=auth("alice")).json()["status"] == "cancelled"
