"""multi_country jobs and sweeps through the HTTP API, with a real worker and Redis."""

import math
import time

import httpx
import pytest

from service.cli import write_report

MODEL = {"name": "multi_country", "params": {"countries": 2}}
COMPLETE = {"basis": {"kind": "chebyshev", "product": "complete", "degree": 2}}


@pytest.fixture(scope="module")
def client(stack):
    with httpx.Client(base_url=stack.api_url, timeout=60) as http:
        yield http


def wait_until(client, path: str, done, timeout_s: float = 180) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        body = client.get(path).json()
        if done(body):
            return body
        assert time.monotonic() < deadline, f"{path} not done after {timeout_s} s: {body.get('status')}"
        time.sleep(0.3)


def test_multi_country_job_records_spheres(client):
    reply = client.post("/v1/jobs", json={"model": MODEL, "method": COMPLETE})
    assert reply.status_code == 202, reply.text
    record = wait_until(client, f"/v1/jobs/{reply.json()['id']}",
                        lambda body: body["status"] in ("succeeded", "failed", "diverged"))
    assert record["status"] == "succeeded", record.get("error")
    assert record["spec"]["method"]["algorithm"]["kind"] == "time_iteration"
    errors = record["errors"]
    assert set(errors["spheres"]) == {"0.01", "0.1", "0.3"}
    assert errors["path"]["max_log10"] < -3
    assert "euler_max_log10" in errors["path"]
    assert record["diagnostics"]["equations"] == ["euler_1", "euler_2", "resource"]


def test_oversize_multi_country_job_rejected(client):
    reply = client.post("/v1/jobs", json={"model": {"name": "multi_country", "params": {"countries": 4}},
                                          "method": {"basis": {"kind": "spline", "n_basis": 5}}})
    assert reply.status_code == 422
    message = reply.json()["message"]
    assert "1,562,500 parameters" in message
    assert "EULERBENCH_MAX_PARAMS" in message


def test_sweep_rows_have_sphere_and_dimension_columns(client, tmp_path, capsys):
    reply = client.post("/v1/sweeps", json={"base": {"model": {"name": "multi_country"}, "method": COMPLETE},
                                            "grid": {"model.params.countries": [1, 2]}})
    assert reply.status_code == 202, reply.text
    sweep = wait_until(client, f"/v1/sweeps/{reply.json()['id']}?rows=true",
                       lambda body: body["status"] != "running")
    rows = sweep["rows"]
    assert [row["status"] for row in rows] == ["succeeded", "succeeded"]
    assert [row["dimension"] for row in rows] == [2, 4]
    assert [row["model.params.countries"] for row in rows] == [1, 2]
    for row in rows:
        assert row["sphere_0.1_max_log10"] < -3
        assert row["path_euler_max_log10"] == pytest.approx(row["path_max_log10"])
    assert rows[0]["closed_form_max_rel"] is None

    assert write_report(client, reply.json()["id"], str(tmp_path), aggregate=False) == 0
    for name in ("path_max_log10-vs-dimension", "solve_s-vs-dimension", "n_params-vs-dimension"):
        assert (tmp_path / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    slopes = (tmp_path / "slopes.csv").read_text().splitlines()
    assert slopes[0] == "series,metric,x,slope"
    assert len(slopes) == 2
    assert slopes[1].startswith("chebyshev-complete euler/least_squares/time_iteration,solve_s,dimension,")
    assert math.isfinite(float(slopes[1].rsplit(",", 1)[1]))
    assert "slope b of solve time against the dimension d" in capsys.readouterr().out


def test_oversize_sweep_rejected_whole(client):
    reply = client.post("/v1/sweeps", json={"base": {"model": {"name": "multi_country"},
                                                     "method": {"basis": {"kind": "spline", "n_basis": 5}}},
                                            "grid": {"model.params.countries": [1, 2, 4]}})
    assert reply.status_code == 422
    assert "1,562,500 parameters" in reply.json()["message"]
