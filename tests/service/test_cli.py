"""The eulerbench command line, run as a subprocess the way a user runs it."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.batch import BatchError, load_batch
from service.embedded import start_redis
from solvers.record import TERMINAL_STATUSES
from worker.settings import get_settings
from worker.store import JobStore

ROOT = Path(__file__).resolve().parents[2]


def eulerbench(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("path", sorted((ROOT / "examples").rglob("*.[jy]*")), ids=lambda p: p.name)
def test_examples_are_valid(path):
    assert load_batch(path)


def test_solve_json_prints_record():
    result = eulerbench("solve", "examples/chebyshev.json", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "succeeded"
    assert record["errors"]["box"]["max_log10"] <= -11
    assert record["spec"]["method"]["quadrature_nodes"] == 10


def test_solve_table(tmp_path):
    batch = tmp_path / "batch.yaml"
    batch.write_text("jobs:\n  - label: small chebyshev\n    method: {basis: {kind: chebyshev, degree: 4}}\n")
    result = eulerbench("solve", str(batch))
    assert result.returncode == 0, result.stderr
    assert "small chebyshev" in result.stdout
    assert "succeeded" in result.stdout


def test_invalid_batch_names_job_and_field(tmp_path):
    batch = tmp_path / "bad.yaml"
    batch.write_text("jobs:\n  - method: {basis: {kind: chebyshev}}\n"
                     "  - method: {basis: {kind: spline, n_basis: 2}}\n")
    result = eulerbench("solve", str(batch))
    assert result.returncode == 2
    assert "job 1 is invalid" in result.stderr
    assert "method.basis.n_basis" in result.stderr
    assert "4 <= value <= 600" in result.stderr


def test_missing_file_is_clear_error(tmp_path):
    with pytest.raises(BatchError, match="cannot read batch file"):
        load_batch(tmp_path / "absent.yaml")


def test_empty_batch_rejected(tmp_path):
    batch = tmp_path / "empty.yaml"
    batch.write_text("jobs: []\n")
    with pytest.raises(BatchError, match="non-empty 'jobs' list"):
        load_batch(batch)


def test_submit_follows_batch(stack, tmp_path):
    batch = tmp_path / "batch.yaml"
    batch.write_text("jobs:\n  - label: submitted spline\n    method: {basis: {kind: spline, n_basis: 8}}\n"
                     "  - label: submitted chebyshev\n    method: {basis: {kind: chebyshev, degree: 5}}\n")
    result = eulerbench("submit", str(batch), "--url", stack.api_url)
    assert result.returncode == 0, result.stderr
    assert "submitted spline" in result.stdout
    assert "submitted chebyshev" in result.stdout
    assert result.stdout.count("succeeded") == 2

    listed = eulerbench("jobs", "--url", stack.api_url, "--basis", "spline")
    assert listed.returncode == 0
    assert "submitted spline" in listed.stdout


def test_submit_rejection_names_queued_jobs(stack, tmp_path):
    batch = tmp_path / "batch.yaml"
    batch.write_text("jobs:\n  - label: queued first\n"
                     "    model: {name: multi_country, params: {countries: 1}}\n"
                     "    method: {basis: {kind: chebyshev, product: smolyak, level: 2}}\n"
                     "  - model: {name: multi_country, params: {countries: 4}}\n"
                     "    method: {basis: {kind: spline, n_basis: 5}}\n")
    result = eulerbench("submit", str(batch), "--url", stack.api_url)
    assert result.returncode == 2
    assert "job 1 was not accepted (HTTP 422)" in result.stderr
    assert "1,562,500 parameters" in result.stderr
    assert "Jobs 0 to 0 were queued and keep running:" in result.stderr
    queued_id = result.stderr.split("keep running: ")[1].split(" ")[0]
    details = eulerbench("show", queued_id, "--url", stack.api_url)
    assert details.returncode == 0, details.stderr
    assert "queued first" in details.stdout
    listed = eulerbench("jobs", "--url", stack.api_url, "--model", "multi_country")
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith(queued_id))
    assert "multi_country N=1" in line


def test_up_once_runs_batch_on_private_redis(tmp_path):
    # A Redis URL where nothing listens makes `up` start its own redis-server.
    batch = tmp_path / "batch.yaml"
    batch.write_text("jobs:\n  - label: embedded chebyshev\n    method: {basis: {kind: chebyshev, degree: 6}}\n"
                     "  - label: embedded spline\n    method: {basis: {kind: spline, n_basis: 10}}\n")
    result = eulerbench("up", str(batch), "--once", "--port", "0", "--redis-url", "redis://127.0.0.1:1/0",
                        "--log-dir", str(tmp_path / "logs"), "--data-dir", str(tmp_path / "data"),
                        timeout=240)
    assert result.returncode == 0, result.stderr
    assert "embedded chebyshev" in result.stdout
    assert "embedded spline" in result.stdout
    assert result.stdout.count("succeeded") == 2
    assert "API at http://127.0.0.1:" in result.stderr
    assert "Redis at redis://127.0.0.1:1/" not in result.stderr
    assert (tmp_path / "data" / "appendonly.aof").exists() or (tmp_path / "data" / "appendonlydir").exists()
    worker_log = (tmp_path / "logs" / "worker.log").read_text()
    assert "started on" in worker_log
    assert "finished: succeeded" in worker_log


def test_up_keeps_records_across_restart(tmp_path):
    batch = tmp_path / "batch.yaml"
    batch.write_text("jobs:\n  - label: kept job\n    method: {basis: {kind: chebyshev, degree: 3}}\n")
    args = ["--once", "--port", "0", "--redis-url", "redis://127.0.0.1:1/0", "--data-dir", str(tmp_path / "data")]
    assert eulerbench("up", str(batch), *args, timeout=240).returncode == 0

    second = tmp_path / "second.yaml"
    second.write_text("jobs:\n  - label: second job\n    method: {basis: {kind: chebyshev, degree: 3}}\n")
    result = eulerbench("up", str(second), *args, timeout=240)
    assert result.returncode == 0, result.stderr
    # The first run's record is still in the restarted private Redis.
    from service.embedded import start_stack

    stack = start_stack("redis://127.0.0.1:1/0", data_dir=tmp_path / "data", log_dir=tmp_path / "logs3")
    try:
        listed = eulerbench("jobs", "--url", stack.api_url)
    finally:
        stack.stop()
    assert "kept job" in listed.stdout
    assert "second job" in listed.stdout


def test_up_stops_children_on_sigterm(tmp_path):
    import psutil

    process = subprocess.Popen([sys.executable, "-m", "service.cli", "up", "--port", "0", "--redis-url",
                                "redis://127.0.0.1:1/0", "--no-persist", "--log-dir", str(tmp_path / "logs")],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(psutil.Process(process.pid).children()) < 3:
        assert time.monotonic() < deadline, "the stack did not start its three processes"
        time.sleep(0.2)
    children = psutil.Process(process.pid).children()
    time.sleep(3)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert alive == []


def test_up_interrupted_cancels_unfinished_jobs(tmp_path):
    # A Redis of its own, so that no other test's worker takes the batch's jobs.
    redis_url, redis_process = start_redis()
    try:
        store = JobStore.from_url(redis_url, get_settings().key_prefix)
        batch = tmp_path / "long.yaml"
        batch.write_text("jobs:\n  - label: long network\n"
                         "    method: {basis: {kind: nn}, algorithm: {kind: adam, steps: 1000000}}\n"
                         "  - label: waiting chebyshev\n    method: {basis: {kind: chebyshev, degree: 4}}\n")
        process = subprocess.Popen([sys.executable, "-m", "service.cli", "up", str(batch), "--port", "0",
                                    "--redis-url", redis_url, "--log-dir", str(tmp_path / "logs")],
                                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any(r.status == "running" for r in store.list()[0]):
            time.sleep(0.5)
        assert any(r.status == "running" for r in store.list()[0]), "the batch never started"

        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=90)
        assert "cancelled 2 unfinished jobs of the batch" in stderr
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(r.status not in TERMINAL_STATUSES for r in store.list()[0]):
            time.sleep(0.5)
        assert [r.status for r in store.list()[0]] == ["cancelled", "cancelled"]
    finally:
        redis_process.terminate()
        redis_process.wait(timeout=10)
