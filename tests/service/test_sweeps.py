"""Sweeps: expansion of the grid, rejection of invalid sweeps, results in three formats,
aggregation over repeats and cancellation, against a real Redis, worker and HTTP API."""

import csv
import io
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
import redis

from service.results import aggregate_rows, to_csv, to_json, to_parquet
from service.sweeps import (SweepInvalid, SweepNotQueued, create_sweep, expand, expand_sweep,
                            get_sweep, parse_sweep)
from tests.service.polling import wait_status
from worker.settings import get_settings
from worker.store import JobStore
from worker.tasks import peak_memory_fields, reset_peak_memory

ROOT = Path(__file__).resolve().parents[2]
CHEBYSHEV = {"method": {"basis": {"kind": "chebyshev"}}}

# 6 grid points x 2 repeats = 12 jobs, each a few seconds at most: small Chebyshev and
# spline bases on the growth model, and a small spline on the savings model.
SWEEP_FILE = """\
kind: sweep
name: test sweep
base: {method: {basis: {kind: chebyshev}}}
grid:
  - method.basis.degree: [3, 4, 5]
  - method: [{basis: {kind: spline}}]
    method.basis.n_basis: [6, 8]
  - model: [{name: savings}]
    method: [{basis: {kind: spline, n_basis: 10}}]
repeats: 2
seed: 7
"""


# Expansion, without a service.

def test_dotted_paths_expand_in_grid_order():
    sweep = parse_sweep({"base": CHEBYSHEV,
                         "grid": {"method.basis.degree": [3, 4], "model.params.gamma": [1, 2]}})
    specs = expand(sweep)
    assert [(s.method.basis.degree, s.model.params.gamma) for s in specs] == [(3, 1), (3, 2), (4, 1), (4, 2)]
    assert sweep.varied() == ["method.basis.degree", "model.params.gamma"]


def test_dotted_path_creates_missing_blocks():
    sweep = parse_sweep({"grid": {"method.basis.kind": ["spline"], "model.name": ["savings"],
                                  "model.params.income.kind": ["ar1"], "model.params.income.rho": [0.5]}})
    [spec] = expand(sweep)
    assert spec.method.basis.kind == "spline"
    assert spec.model.name == "savings"
    assert spec.model.params.income.rho == 0.5


def test_whole_method_blocks_and_labels():
    blocks = [{"basis": {"kind": "spline", "n_basis": 20, "knots": "kink"}},
              {"basis": {"kind": "spline", "n_basis": 20}},
              {"basis": {"kind": "chebyshev", "degree": 8}}]
    expansion = expand_sweep(parse_sweep({"base": {"model": {"name": "savings"}},
                                          "grid": {"method": blocks}}))
    assert [s.method.basis.kind for s in expansion.specs] == ["spline", "spline", "chebyshev"]
    assert expansion.method_labels == ["spline euler/collocation/newton (knots=kink)",
                                       "spline euler/collocation/newton",
                                       "chebyshev euler/collocation/newton"]


def test_later_path_applies_on_top_of_block():
    sweep = parse_sweep({"grid": {"method": [{"basis": {"kind": "spline"}}], "method.basis.n_basis": [6, 9]}})
    assert [s.method.basis.n_basis for s in expand(sweep)] == [6, 9]


def test_sub_grids_concatenate():
    sweep = parse_sweep({"base": CHEBYSHEV, "grid": [{"method.basis.degree": [3, 4]},
                                                    {"model.params.gamma": [5]}]})
    specs = expand(sweep)
    assert [(s.method.basis.degree, s.model.params.gamma) for s in specs] == [(3, 2.0), (4, 2.0), (10, 5)]


def test_repeats_run_consecutive_seeds():
    sweep = parse_sweep({"base": CHEBYSHEV, "grid": {"method.basis.degree": [3, 4]}, "repeats": 3, "seed": 5})
    assert [(s.method.basis.degree, s.seed) for s in expand(sweep)] == [
        (3, 5), (3, 6), (3, 7), (4, 5), (4, 6), (4, 7)]
    assert sweep.varied() == ["method.basis.degree", "seed"]


def test_listed_seeds_set_repeats():
    sweep = parse_sweep({"base": {**CHEBYSHEV, "seed": 3}, "grid": {"method.basis.degree": [3]},
                         "seeds": [11, 2]})
    assert [s.seed for s in expand(sweep)] == [11, 2]
    assert parse_sweep({"base": {**CHEBYSHEV, "seed": 3}, "grid": {"method.basis.degree": [3]},
                        "repeats": 2}).seed_list() == [3, 4]


def test_seeds_and_repeats_must_agree():
    with pytest.raises(SweepInvalid, match="repeats is 3 but seeds lists 2 seeds"):
        parse_sweep({"grid": {"method.basis.degree": [3]}, "repeats": 3, "seeds": [1, 2]})
    with pytest.raises(SweepInvalid, match="not both"):
        parse_sweep({"grid": {"method.basis.degree": [3]}, "seed": 1, "seeds": [1, 2]})


def test_unknown_path_named_with_valid_fields():
    with pytest.raises(SweepInvalid) as caught:
        expand(parse_sweep({"base": CHEBYSHEV, "grid": {"method.basis.degre": [3]}}))
    assert "'method.basis.degre'" in str(caught.value)
    assert "valid fields there: activation, degree" in str(caught.value)
    assert caught.value.detail[0]["field"] == "grid.method.basis.degre"


def test_path_below_a_value_rejected():
    with pytest.raises(SweepInvalid, match="model.params.k_box is a value"):
        expand(parse_sweep({"base": CHEBYSHEV, "grid": {"model.params.k_box.low": [0.5]}}))


def test_size_limit_checked_before_expanding():
    sweep = parse_sweep({"base": CHEBYSHEV, "grid": {"method.basis.degree": [3, 4, 5, 6],
                                                     "model.params.gamma": [1, 2, 3]}})
    with pytest.raises(SweepInvalid, match="expands to 12 jobs, more than this service's limit of 10"):
        expand(sweep, max_jobs=10)
    huge = parse_sweep({"base": CHEBYSHEV, "grid": {"model.params.gamma": list(range(1, 1001)),
                                                    "model.params.beta": [0.9] * 1000}})
    started = time.monotonic()
    with pytest.raises(SweepInvalid, match="expands to 1000000 jobs, more than this service's limit of 2000"):
        expand(huge)
    assert time.monotonic() - started < 1.0


def test_invalid_point_gives_index_and_reason():
    sweep = parse_sweep({"base": CHEBYSHEV, "grid": {"method.basis.degree": [3, 99, 4]}, "repeats": 2})
    with pytest.raises(SweepInvalid) as caught:
        expand(sweep)
    assert [item["index"] for item in caught.value.detail] == [2, 3]
    assert caught.value.detail[0]["field"] == "method.basis.degree"
    assert caught.value.detail[0]["overrides"] == {"method.basis.degree": 99}
    assert "1 <= value <= 40" in caught.value.detail[0]["msg"]
    assert "2 of its 6 jobs are invalid" in str(caught.value)


# Writers, on rows written by hand.

HAND_ROWS = [
    {"index": 0, "status": "succeeded", "method": "a", "method.basis.degree": 3, "box_max_log10": -5.5,
     "n_params": 16, "peak_memory_mb": None, "converged": True, "hardware": "cpu x"},
    {"index": 1, "status": "failed", "method": "a", "method.basis.degree": None, "box_max_log10": None,
     "n_params": None, "peak_memory_mb": None, "converged": None, "hardware": None},
    {"index": 2, "status": "succeeded", "method": "b", "method.basis.degree": 5,
     "box_max_log10": -math.inf, "n_params": 36, "peak_memory_mb": None, "converged": False,
     "hardware": "cpu x"},
]


def read_all(rows):
    """Return the rows as read back from the CSV, JSON and Parquet writers."""
    document = json.loads(to_json(rows))
    types = document["column_types"]
    convert = {"int": int, "float": float, "bool": lambda text: text == "true", "string": str}
    from_csv = [{column: None if text == "" else convert[types[column]](text) for column, text in row.items()}
                for row in csv.DictReader(io.StringIO(to_csv(rows)))]
    from_json = [{column: float(value) if types[column] == "float" and value is not None else value
                  for column, value in row.items()} for row in document["rows"]]
    from_parquet = pq.read_table(io.BytesIO(to_parquet(rows))).to_pylist()
    return from_csv, from_json, from_parquet, types


def same(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b and type(a) is type(b)


def assert_same_rows(*tables):
    first = tables[0]
    for other in tables[1:]:
        assert len(other) == len(first)
        for row, other_row in zip(first, other):
            assert list(row) == list(other_row)
            for column in row:
                assert same(row[column], other_row[column]), (column, row[column], other_row[column])


def test_writers_hold_same_rows_and_types():
    from_csv, from_json, from_parquet, types = read_all(HAND_ROWS)
    assert types["method.basis.degree"] == "int"
    assert types["peak_memory_mb"] == "float"
    assert types["converged"] == "bool"
    assert from_parquet[2]["box_max_log10"] == -math.inf
    assert from_parquet[1]["n_params"] is None
    assert_same_rows(from_csv, from_json, from_parquet)


def test_aggregate_takes_median_of_succeeded_repeats():
    rows = [{"index": i, "job_id": str(i), "repeat": i % 3, "seed": i % 3, "status": status,
             "method": "m", "method.basis.degree": 3, "solve_s": solve_s, "box_max_log10": -5.0}
            for i, (status, solve_s) in enumerate([("succeeded", 1.0), ("succeeded", 3.0), ("failed", 100.0)])]
    [group] = aggregate_rows(rows)
    assert group["method.basis.degree"] == 3
    assert group["n"] == 3
    assert group["n_succeeded"] == 2
    assert group["statuses"] == "succeeded 2, failed 1"
    assert group["solve_s"] == 2.0
    assert group["solve_s_spread"] == 2.0
    assert group["box_max_log10_spread"] == 0.0
    assert "seed" not in group


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_peak_memory_reset_per_job():
    assert reset_peak_memory(on_gpu=False) == "job"
    baseline = peak_memory_fields("job", on_gpu=False)["peak_memory_mb"]
    block = np.ones(200 * 2**20 // 8)  # 200 MiB, every page written
    del block
    after = peak_memory_fields("job", on_gpu=False)
    assert after["peak_memory_scope"] == "job"
    assert after["peak_memory_mb"] >= baseline + 190
    reset_peak_memory(on_gpu=False)
    assert peak_memory_fields("job", on_gpu=False)["peak_memory_mb"] < baseline + 50


def test_submit_rejects_sweep_file(tmp_path):
    (tmp_path / "sweep.yaml").write_text(SWEEP_FILE)
    result = subprocess.run([sys.executable, "-m", "service.cli", "submit", str(tmp_path / "sweep.yaml")],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "is a sweep file; submit it with `eulerbench sweep" in result.stderr


# Creation against a real Redis, with a queueing step that fails partway.

def test_queueing_failure_ends_every_job(redis_url, key_prefix):
    store = JobStore.from_url(redis_url, key_prefix)
    sweep = parse_sweep({"base": CHEBYSHEV, "grid": {"method.basis.degree": [3, 4, 5, 6]}})
    sent = []

    def enqueue(record):
        if len(sent) == 2:
            raise SweepNotQueued("broker down")
        sent.append(record.id)

    with pytest.raises(SweepNotQueued):
        create_sweep(store, sweep, enqueue)
    [sweep_id] = store.sweep_ids()[0]
    record = get_sweep(store, sweep_id)
    assert record["status"] == "failed"
    assert "after 2 of 4 jobs" in record["error"]
    statuses = [store.get(job_id).status for job_id in record["job_ids"]]
    assert statuses == ["cancelled", "cancelled", "failed", "failed"]
    assert record["finished_at"] is not None


# The service: a real worker and API.

@pytest.fixture(scope="module")
def client(stack):
    with httpx.Client(base_url=stack.api_url, timeout=60) as http:
        yield http


def job_keys(stack) -> dict:
    """Return counts that grow when jobs are created or queued."""
    prefix = get_settings().key_prefix
    db = redis.Redis.from_url(stack.redis_url)
    return {"jobs": db.zcard(f"{prefix}:jobs"), "sweeps": db.zcard(f"{prefix}:sweeps"),
            "job keys": sum(1 for _ in db.scan_iter(match=f"{prefix}:job:*", count=1000)),
            "cpu queue": db.llen("cpu")}


def test_invalid_sweep_rejected_whole(client, stack):
    before = job_keys(stack)
    reply = client.post("/v1/sweeps", json={"base": CHEBYSHEV, "grid": {"method.basis.degree": [3, 4, 41, 5]}})
    assert reply.status_code == 422
    body = reply.json()
    [item] = body["detail"]
    assert item["index"] == 2
    assert item["field"] == "method.basis.degree"
    assert item["input"] == 41
    assert "1 <= value <= 40" in item["msg"]
    assert "job 2 (method.basis.degree=41) is invalid" in body["message"]
    assert job_keys(stack) == before


def test_oversized_sweep_names_size_and_limit(client):
    reply = client.post("/v1/sweeps", json={"base": CHEBYSHEV, "grid": {
        "model.params.gamma": list(range(1, 61)), "method.basis.degree": list(range(1, 41))}})
    assert reply.status_code == 422
    assert "expands to 2400 jobs, more than this service's limit of 2000" in reply.json()["message"]


def test_unknown_sweep_404(client):
    assert client.get("/v1/sweeps/" + "0" * 32).status_code == 404
    assert client.get("/v1/sweeps/not-an-id/results").status_code == 404
    assert client.delete("/v1/sweeps/" + "0" * 32).status_code == 404


@pytest.fixture(scope="module")
def cli_sweep(client, tmp_path_factory):
    """Run `eulerbench sweep` on a 12-job sweep file against the stack; return its output."""
    folder = tmp_path_factory.mktemp("sweep")
    (folder / "sweep.yaml").write_text(SWEEP_FILE)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "service.cli", "sweep", str(folder / "sweep.yaml"),
                             "--url", str(client.base_url), "--out", str(folder / "out"), "--aggregate"],
                            cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    sweep_id = re.search(r"sweep ([0-9a-f]{32}) queued", result.stderr).group(1)
    return {"result": result, "out": folder / "out", "id": sweep_id, "seconds": time.monotonic() - started}


def test_cli_sweep_completes_and_prints_table(cli_sweep):
    stdout = cli_sweep["result"].stdout
    assert "test sweep" in stdout
    assert "done, 12 succeeded" in stdout
    assert "spline euler/collocation/newton" in stdout
    assert "n_basis" in stdout.splitlines()[0]
    assert f"to {cli_sweep['out']}" in stdout
    assert "jobs" in cli_sweep["result"].stderr


def test_cli_sweep_files_hold_same_rows(cli_sweep):
    out = cli_sweep["out"]
    document = json.loads((out / "results.json").read_text())
    types = document["column_types"]
    convert = {"int": int, "float": float, "bool": lambda text: text == "true", "string": str}
    with open(out / "results.csv", newline="") as handle:
        from_csv = [{column: None if text == "" else convert[types[column]](text)
                     for column, text in row.items()} for row in csv.DictReader(handle)]
    from_json = [{column: float(value) if types[column] == "float" and value is not None else value
                  for column, value in row.items()} for row in document["rows"]]
    from_parquet = pq.read_table(out / "results.parquet").to_pylist()
    assert len(from_json) == 12
    assert_same_rows(from_csv, from_json, from_parquet)
    assert (out / "results-aggregated.csv").exists()


def test_rows_carry_varied_fields_and_figures(client, cli_sweep):
    rows = client.get(f"/v1/sweeps/{cli_sweep['id']}/results").json()["rows"]
    assert [row["index"] for row in rows] == list(range(12))
    assert [row["seed"] for row in rows[:2]] == [7, 8]
    assert [row["repeat"] for row in rows[:2]] == [0, 1]
    assert [row["method.basis.degree"] for row in rows[:6:2]] == [3, 4, 5]
    assert [row["method.basis.n_basis"] for row in rows[6:10:2]] == [6, 8]
    assert rows[0]["method.basis.n_basis"] is None
    assert [row["model"] for row in rows[::2]] == ["growth"] * 5 + ["savings"]
    assert all(row["status"] == "succeeded" for row in rows)
    first = rows[0]
    assert first["method"] == "chebyshev euler/collocation/newton"
    assert first["n_params"] == 16
    assert first["box_max_log10"] < -4
    assert first["solve_s"] > 0
    assert first["peak_memory_mb"] > 10
    assert first["peak_memory_scope"] == "job"
    assert first["hardware"]
    assert rows[-1]["box_n_binding"] is not None
    assert first["box_n_binding"] is None
    assert client.get(f"/v1/jobs/{first['job_id']}").json()["sweep_id"] == cli_sweep["id"]


def test_sweep_reports_counts_and_rows(client, cli_sweep):
    sweep = client.get(f"/v1/sweeps/{cli_sweep['id']}").json()
    assert sweep["status"] == "done"
    assert sweep["counts"] == {"succeeded": 12}
    assert sweep["progress"] == 1.0
    assert sweep["repeats"] == 2
    assert sweep["seeds"] == [7, 8]
    assert sweep["varied"] == ["method.basis.degree", "method", "method.basis.n_basis", "model", "seed"]
    assert len(sweep["rows"]) == 12
    listed = client.get("/v1/sweeps", params={"limit": 100}).json()
    assert cli_sweep["id"] in [item["id"] for item in listed["items"]]


def test_aggregate_over_repeats(client, cli_sweep):
    rows = client.get(f"/v1/sweeps/{cli_sweep['id']}/results", params={"aggregate": "true"}).json()["rows"]
    assert len(rows) == 6
    assert all(row["n"] == 2 and row["n_succeeded"] == 2 for row in rows)
    assert "seed" not in rows[0]
    # Collocation does not draw random numbers, so both seeds give the same errors.
    assert rows[0]["box_max_log10_spread"] == 0.0
    assert rows[0]["solve_s_spread"] >= 0.0


def test_report_fetches_again(cli_sweep, client, tmp_path):
    result = subprocess.run([sys.executable, "-m", "service.cli", "report", cli_sweep["id"],
                             "--url", str(client.base_url), "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "results.parquet").read_bytes() == (cli_sweep["out"] / "results.parquet").read_bytes()


def test_delete_cancels_queued_jobs(client):
    # A long network job keeps the only worker busy, so the sweep's jobs stay queued.
    blocker = client.post("/v1/jobs", json={"method": {"basis": {"kind": "nn"},
                                                       "algorithm": {"kind": "adam", "steps": 1_000_000}}}).json()["id"]
    try:
        wait_status(client, blocker, {"running"})
        reply = client.post("/v1/sweeps", json={"base": CHEBYSHEV, "grid": {"method.basis.degree": [3, 4, 5]}})
        assert reply.status_code == 202
        sweep_id = reply.json()["id"]

        reply = client.delete(f"/v1/sweeps/{sweep_id}")
        assert reply.status_code == 200
        assert reply.json()["cancelled"] == 3
        assert reply.json()["status"] == "cancelled"
        assert reply.json()["counts"] == {"cancelled": 3}
        assert client.delete(f"/v1/sweeps/{sweep_id}").status_code == 409
    finally:
        client.post(f"/v1/jobs/{blocker}/cancel")
    wait_status(client, blocker, {"cancelled", "succeeded", "failed"})
    time.sleep(1.0)
    for row in client.get(f"/v1/sweeps/{sweep_id}/results").json()["rows"]:
        record = client.get(f"/v1/jobs/{row['job_id']}").json()
        assert record["status"] == "cancelled"
        assert record["started_at"] is None


def test_labels_name_sparse_and_complete_bases():
    blocks = [{"basis": {"kind": "chebyshev", "product": "smolyak", "level": 2}},
              {"basis": {"kind": "chebyshev", "product": "complete", "degree": 3}},
              {"basis": {"kind": "chebyshev", "degree": 3}}]
    expansion = expand_sweep(parse_sweep({"base": {"model": {"name": "multi_country",
                                                             "params": {"countries": 2}}},
                                          "grid": {"method": blocks}}))
    assert [label.split(" ")[0] for label in expansion.method_labels] == [
        "smolyak", "chebyshev-complete", "chebyshev"]
