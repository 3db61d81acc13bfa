"""No job lost or run twice: killed workers, stale jobs, Redis restarts and hostile messages.

The process tests start their own redis-server, worker processes and API process, with a
heartbeat every second and workers counted as gone after 4 s, so that the sweeper acts
within seconds. They use private Redis servers, not the shared test database, because
any other worker consuming the same `cpu` queue would take their messages.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import re
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from service.embedded import api_command, free_port, start_redis, worker_command
from solvers.spec import JobSpec
from worker.celery_app import create_celery
from worker.liveness import Heartbeat
from worker.settings import Settings
from worker.store import JobStore
from worker.sweeper import Sweeper

HEARTBEAT_S = 1.0
STALE_AFTER_S = 4.0
UNSENT_AFTER_S = 2.0
LONG_NN = {"method": {"basis": {"kind": "nn", "width": 16},
                      "algorithm": {"kind": "adam", "steps": 1_000_000}}}
SHORT = {"method": {"basis": {"kind": "spline", "n_basis": 10}}}
SECONDS_LONG = {"method": {"basis": {"kind": "spline", "n_basis": 40}}}
READY = re.compile(r"worker (\S+) ready on queues")


def wait_until(predicate, timeout_s: float, what: str, poll_s: float = 0.1):
    """Return predicate()'s first truthy value; fail after timeout_s seconds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"{what}: not within {timeout_s:g} s")


@dataclass
class Worker:
    """One `eulerbench worker` process group and the instance name it logged."""

    process: subprocess.Popen
    log: Path
    instance: str = ""

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill_all(self) -> None:
        """SIGKILL the main process and its pool processes at once."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@dataclass
class Cluster:
    """A private Redis with workers and an API, all real processes on 127.0.0.1."""

    redis_url: str
    log_dir: Path
    prefix: str = field(default_factory=lambda: f"rel-{uuid.uuid4().hex[:8]}")
    processes: list[subprocess.Popen] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    api_url: str = ""

    def env(self) -> dict[str, str]:
        return {**os.environ, "EULERBENCH_REDIS_URL": self.redis_url,
                "EULERBENCH_KEY_PREFIX": self.prefix,
                "EULERBENCH_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S),
                "EULERBENCH_STALE_AFTER_S": str(STALE_AFTER_S),
                "EULERBENCH_UNSENT_AFTER_S": str(UNSENT_AFTER_S),
                "EULERBENCH_STORE_RETRY_S": "60"}

    def _spawn(self, name: str, command: list[str]) -> tuple[subprocess.Popen, Path]:
        log = self.log_dir / f"{name}.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(command, env=self.env(), stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        self.processes.append(process)
        return process, log

    def start_worker(self, concurrency: int = 1, own_pid_namespace: bool = False) -> Worker:
        """Start a worker and wait until it logged its instance name.

        In its own pid namespace (through `unshare`), a worker looks to the others like
        a worker on another host: they cannot test its pids, only its heartbeats.
        """
        command = worker_command(concurrency)
        if own_pid_namespace:
            command = ["unshare", "--pid", "--fork", "--mount-proc", *command]
        process, log = self._spawn(f"worker-{len(self.workers)}", command)
        worker = Worker(process, log)
        worker.instance = wait_until(lambda: _logged_instance(worker), 90, f"worker ready ({log})")
        self.workers.append(worker)
        return worker

    def start_api(self) -> None:
        port = free_port()
        self._spawn("api", api_command("127.0.0.1", port))
        self.api_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _healthy(self.api_url), 60, "API health check")

    def store(self) -> JobStore:
        return JobStore.from_url(self.redis_url, self.prefix)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _logged_instance(worker: Worker) -> str | None:
    if worker.process.poll() is not None:
        raise AssertionError(f"worker exited with code {worker.process.returncode}:\n{worker.log_text()[-3000:]}")
    found = READY.search(worker.log_text())
    return found.group(1) if found else None


def _healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def submit(client: httpx.Client, spec: dict) -> str:
    reply = client.post("/v1/jobs", json=spec)
    assert reply.status_code == 202, reply.text
    return reply.json()["id"]


def job(client: httpx.Client, job_id: str) -> dict:
    return client.get(f"/v1/jobs/{job_id}").json()


def wait_ended(client: httpx.Client, job_id: str, timeout_s: float = 90) -> dict:
    return wait_until(lambda: (lambda r: r if r["status"] not in ("queued", "running") else None)(
        job(client, job_id)), timeout_s, f"job {job_id} ended")


def owner_pid(record: dict) -> int:
    return int(record["worker"].rsplit("/", 1)[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A private Redis, the API and one worker with two pool processes."""
    redis_url, redis_process = start_redis()
    started = Cluster(redis_url, tmp_path_factory.mktemp("reliability-logs"))
    try:
        started.start_api()
        started.start_worker(concurrency=2)
        yield started
    finally:
        started.stop()
        redis_process.kill()
        redis_process.wait()


@pytest.fixture(scope="module")
def client(cluster):
    with httpx.Client(base_url=cluster.api_url, timeout=30) as http:
        yield http


# Store and sweeper against a real Redis, without worker processes.

def test_policy_over_size_cap_not_stored(redis_url, key_prefix):
    store = JobStore(redis.Redis.from_url(redis_url, decode_responses=True), key_prefix,
                     max_value_bytes=4096)
    record = store.create(JobSpec.model_validate(SHORT))
    store.start(record.id, worker="w1")

    assert store.finish(record.id, "succeeded", {"iterations": 3}, {"theta": [0.5] * 2000})

    done = store.get(record.id)
    assert done.status == "succeeded"
    assert done.iterations == 3
    assert any("fitted policy was not stored" in w and "4096 bytes" in w for w in done.warnings)
    assert store.client.get(f"{key_prefix}:job:{record.id}:policy") is None


def test_record_over_size_cap_drops_history(redis_url, key_prefix):
    store = JobStore(redis.Redis.from_url(redis_url, decode_responses=True), key_prefix,
                     max_value_bytes=8192)
    record = store.create(JobSpec.model_validate(SHORT))
    store.start(record.id, worker="w1")
    history = [(i, 1e-3, 0.01 * i) for i in range(2000)]

    assert store.finish(record.id, "succeeded", {"iterations": 2000, "history": history})

    raw = store.client.get(f"{key_prefix}:job:{record.id}")
    assert len(raw.encode()) <= 8192
    done = store.get(record.id)
    assert done.history == []
    assert done.iterations == 2000
    assert any("history was not stored" in w for w in done.warnings)


@pytest.fixture
def private_redis():
    url, process = start_redis()
    yield url
    process.kill()
    process.wait()


def test_sweeper_requeues_once_then_fails(private_redis):
    settings = Settings(heartbeat_interval_s=0.1, stale_after_s=0.3, max_attempts=2)
    store = JobStore.from_url(private_redis, "sweep")
    celery_app = create_celery(private_redis)
    record = store.create(JobSpec.model_validate(SHORT))
    dead_owner = "celery@gone/0123456789ab/999999"
    store.start(record.id, worker=dead_owner, stale_after_s=settings.stale_after_s)
    sweepers = [Sweeper(store, celery_app, settings, holder=f"sweeper-{i}") for i in range(4)]

    # A fresh attempt without a heartbeat is given stale_after_s before it is judged.
    assert sweepers[0].sweep() == {}
    time.sleep(settings.stale_after_s + 0.1)
    results: list[dict] = []
    threads = [threading.Thread(target=lambda s=s: results.append(s.run_once())) for s in sweepers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(map(len, results)) == [0, 0, 0, 1]
    assert store.get(record.id).status == "queued"
    assert store.get(record.id).attempts == 1
    messages = [json.loads(m) for m in store.client.lrange("cpu", 0, -1)]
    assert [json.loads(base64.b64decode(m["body"]))[0] for m in messages] == [[record.id]]
    assert store.requeue_stale(record.id, 1, 2, settings.stale_after_s) is None

    # The stale attempt cannot write over the attempt that took over.
    again = store.start(record.id, worker="celery@new/ba9876543210/1234")
    assert again.attempts == 2
    assert not store.finish(record.id, "succeeded", {"iterations": 1}, attempt=1)
    assert store.get(record.id).status == "running"

    # The second attempt's worker dies too: max_attempts is reached, so the job fails.
    store.write_heartbeat("celery@new/ba9876543210", Heartbeat([4321], "elsewhere", time.time() + 1),
                          ttl_s=10)
    assert sweepers[0].sweep() == {record.id: "failed"}
    failed = store.get(record.id)
    assert failed.status == "failed"
    assert "stopped sending heartbeats during attempt 2 of 2" in failed.error
    assert store.running_ids() == []


def queued_job_ids(store: JobStore, queue: str = "cpu") -> list[str]:
    """Return the job id of each message waiting in a Celery queue on the store's Redis."""
    messages = [json.loads(m) for m in store.client.lrange(queue, 0, -1)]
    return [json.loads(base64.b64decode(m["body"]))[0][0] for m in messages]


def test_sweeper_sends_unsent_jobs(private_redis):
    settings = Settings(unsent_after_s=0.5)
    store = JobStore.from_url(private_redis, "unsent")
    sweeper = Sweeper(store, create_celery(private_redis), settings, holder="sweeper")
    orphan = store.create(JobSpec.model_validate(SHORT))
    started = store.create(JobSpec.model_validate(SHORT))
    store.start(started.id, worker="celery@live/0123456789ab/1")
    cancelled = store.create(JobSpec.model_validate(SHORT))
    assert store.cancel_queued(cancelled.id)

    # Younger than unsent_after_s: the API may still be sending.
    assert sweeper.sweep() == {}
    assert sorted(store.unsent_ids(time.time())) == sorted([orphan.id, cancelled.id])

    time.sleep(settings.unsent_after_s + 0.1)
    assert sweeper.sweep() == {orphan.id: "queued"}
    assert queued_job_ids(store) == [orphan.id]
    assert store.get(orphan.id).status == "queued"
    assert store.unsent_ids(time.time()) == []

    # Sent once: later rounds send nothing more.
    assert sweeper.sweep() == {}
    assert queued_job_ids(store) == [orphan.id]


def test_unsent_mark_cleared_by_start_and_finish(private_redis):
    store = JobStore.from_url(private_redis, "marks")
    started = store.create(JobSpec.model_validate(SHORT))
    failed = store.create(JobSpec.model_validate(SHORT))
    assert sorted(store.unsent_ids(time.time())) == sorted([started.id, failed.id])

    store.start(started.id, worker="celery@live/0123456789ab/1")
    store.finish(failed.id, "failed", {"error": "could not be queued: test"})

    assert store.unsent_ids(time.time()) == []


def test_api_submission_leaves_no_unsent_mark(private_redis, tmp_path):
    cluster = Cluster(private_redis, tmp_path)
    try:
        cluster.start_api()
        with httpx.Client(base_url=cluster.api_url, timeout=30) as http:
            job_id = submit(http, SHORT)
        store = cluster.store()
        assert store.get(job_id).status == "queued"
        assert queued_job_ids(store) == [job_id]
        assert store.unsent_ids(time.time()) == []
    finally:
        cluster.stop()


# Real worker processes, real HTTP.

def test_pickle_message_rejected(cluster, client, tmp_path):
    store = cluster.store()
    record = store.create(JobSpec.model_validate(SHORT))
    marker = tmp_path / "unpickled"

    class Probe:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    task_id = uuid.uuid4().hex
    body = pickle.dumps(((record.id,), {"probe": Probe()}, {"callbacks": None, "errbacks": None,
                                                            "chain": None, "chord": None}))
    celery_app = create_celery(cluster.redis_url)
    with celery_app.connection_for_write() as connection:
        connection.default_channel.basic_publish(
            connection.default_channel.prepare_message(
                body, content_type="application/x-python-serialize", content_encoding="binary",
                headers={"lang": "py", "task": "eulerbench.run_job", "id": task_id,
                         "root_id": task_id, "parent_id": None, "group": None, "retries": 0,
                         "argsrepr": repr((record.id,)), "kwargsrepr": "{}", "origin": "test"},
                properties={"correlation_id": task_id, "delivery_info": {"routing_key": "cpu"}}),
            exchange="", routing_key="cpu")
    # A message was sent, so the sweeper must not send a valid one in its place.
    store.mark_sent(record.id)

    # The worker keeps consuming: a later JSON job runs.
    follow = submit(client, SHORT)
    assert wait_ended(client, follow)["status"] == "succeeded"
    log = cluster.workers[0].log_text()
    rejection = ("Received invalid task message: Refusing to deserialize untrusted content of "
                 "type pickle (application/x-python-serialize)")
    assert rejection in log
    assert record.id in log.split(rejection, 1)[1].split("ContentDisallowed", 1)[0]
    assert not marker.exists()
    assert store.get(record.id).status == "queued"
    assert store.client.llen("cpu") == 0


def test_duplicate_delivery_keeps_first_result(cluster, client):
    store = cluster.store()
    celery_app = create_celery(cluster.redis_url)
    record = store.create(JobSpec.model_validate(SECONDS_LONG))

    # Two deliveries at once go to the two pool processes, and the second finds a live attempt.
    for _ in range(2):
        celery_app.send_task("eulerbench.run_job", args=[record.id], queue="cpu")
    first = wait_ended(client, record.id)
    assert first["status"] == "succeeded"
    assert first["attempts"] == 1
    log = cluster.workers[0].log_text()
    assert f"job {record.id} delivered again while attempt 1 may still run" in log

    # A third delivery after the end changes nothing.
    celery_app.send_task("eulerbench.run_job", args=[record.id], queue="cpu")
    wait_until(lambda: f"job {record.id} already ended succeeded" in cluster.workers[0].log_text(),
               30, "late duplicate dropped")
    last = job(client, record.id)
    assert last["finished_at"] == first["finished_at"]
    assert last["timings"] == first["timings"]
    assert last["attempts"] == 1
    assert cluster.workers[0].log_text().count(f"job {record.id} finished: succeeded") == 1


def test_job_never_sent_runs_after_sweep(cluster, client):
    # The record the API writes before it sends the message, as if it stopped in between.
    record = cluster.store().create(JobSpec.model_validate(SHORT))

    done = wait_ended(client, record.id, timeout_s=60)

    assert done["status"] == "succeeded"
    assert done["attempts"] == 1
    assert cluster.store().unsent_ids(time.time()) == []
    log = cluster.workers[0].log_text()
    assert f"job {record.id} sent; it was queued at" in log


@pytest.mark.slow
def test_pool_process_sigkill_redelivered_at_once(cluster, client):
    job_id = submit(client, SECONDS_LONG)
    running = wait_until(lambda: (lambda r: r if r["status"] == "running" else None)(job(client, job_id)),
                         60, "job running")
    time.sleep(0.3)
    os.kill(owner_pid(running), signal.SIGKILL)
    killed_at = time.monotonic()

    again = wait_until(lambda: (lambda r: r if r["attempts"] == 2 else None)(job(client, job_id)),
                       STALE_AFTER_S + 2 * HEARTBEAT_S, "second attempt started", poll_s=0.05)
    redelivered_s = time.monotonic() - killed_at
    done = wait_ended(client, job_id)

    print(f"pool process SIGKILL: second attempt started {redelivered_s:.2f} s after the kill")
    assert again["worker"] != running["worker"]
    assert done["status"] == "succeeded"
    assert done["attempts"] == 2
    assert cluster.workers[0].log_text().count(f"job {job_id} finished: succeeded") == 1


@pytest.mark.slow
def test_soft_and_hard_time_limits(cluster, client):
    store = cluster.store()
    celery_app = create_celery(cluster.redis_url)
    soft_job = store.create(JobSpec.model_validate(LONG_NN))
    hard_job = store.create(JobSpec.model_validate(LONG_NN))
    celery_app.send_task("eulerbench.run_job", args=[soft_job.id], queue="cpu",
                         soft_time_limit=8, time_limit=60)
    celery_app.send_task("eulerbench.run_job", args=[hard_job.id], queue="cpu", time_limit=8)

    soft = wait_ended(client, soft_job.id)
    assert soft["status"] == "timed_out"
    assert "soft time limit exceeded" in soft["error"]
    assert soft["iterations"] > 0
    assert soft["progress"]["iteration"] == soft["iterations"]
    assert soft["progress"]["residual"] > 0
    assert soft["history"]

    hard = wait_ended(client, hard_job.id)
    assert hard["status"] == "timed_out"
    assert "hard time limit exceeded" in hard["error"]
    assert hard["iterations"] > 0
    assert hard["progress"]["residual"] > 0

    # The killed pool process was replaced: jobs still run.
    assert wait_ended(client, submit(client, SHORT))["status"] == "succeeded"


def test_worker_rejects_soft_limit_not_below_hard(cluster):
    command = worker_command(1)
    env = {**cluster.env(), "EULERBENCH_TIME_LIMIT_GRACE_S": "0"}
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert finished.returncode != 0
    assert "soft time limit (86400 s) must be below the hard limit (86400 s)" in finished.stderr
    assert "EULERBENCH_TIME_LIMIT_GRACE_S" in finished.stderr


@pytest.mark.slow
def test_whole_worker_sigkill_swept(cluster, client):
    cluster.start_worker(concurrency=1)
    # The sweeper of a new worker waits until its own heartbeats ran for stale_after_s.
    time.sleep(STALE_AFTER_S + HEARTBEAT_S)
    job_id = submit(client, SECONDS_LONG)
    running = wait_until(lambda: (lambda r: r if r["status"] == "running" else None)(job(client, job_id)),
                         60, "job running")
    owner = next(w for w in cluster.workers if running["worker"].startswith(w.instance + "/"))
    survivor = next(w for w in cluster.workers if w is not owner and w.process.poll() is None)
    owner.kill_all()
    killed_at = time.monotonic()

    queued = wait_until(lambda: (lambda r: r if r["attempts"] == 2 or r["status"] == "queued" else None)(
        job(client, job_id)), STALE_AFTER_S + 3 * HEARTBEAT_S + 2, "job queued again", poll_s=0.05)
    swept_s = time.monotonic() - killed_at
    done = wait_ended(client, job_id)

    print(f"whole-worker SIGKILL: job queued again {swept_s:.2f} s after the kill "
          f"(stale_after_s={STALE_AFTER_S:g}, heartbeat_interval_s={HEARTBEAT_S:g})")
    assert queued["attempts"] in (1, 2)
    assert done["status"] == "succeeded"
    assert done["attempts"] == 2
    assert done["worker"].startswith(survivor.instance + "/")
    assert f"job {job_id} queued again" in "".join(w.log_text() for w in cluster.workers)


def _can_unshare_pid() -> bool:
    try:
        return subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.slow
def test_worker_on_other_host_swept_after_stale(cluster, client):
    if not _can_unshare_pid():
        pytest.skip("`unshare --pid` is not permitted here, so no worker can look remote")
    cluster.start_worker(concurrency=1, own_pid_namespace=True)
    time.sleep(STALE_AFTER_S + HEARTBEAT_S)
    job_id = submit(client, SECONDS_LONG)
    running = wait_until(lambda: (lambda r: r if r["status"] == "running" else None)(job(client, job_id)),
                         60, "job running")
    owner = next(w for w in cluster.workers if running["worker"].startswith(w.instance + "/"))
    owner.kill_all()
    killed_at = time.monotonic()

    wait_until(lambda: (lambda r: r if r["attempts"] == 2 or r["status"] == "queued" else None)(
        job(client, job_id)), STALE_AFTER_S + 3 * HEARTBEAT_S + 2, "job queued again", poll_s=0.05)
    swept_s = time.monotonic() - killed_at
    done = wait_ended(client, job_id)

    print(f"whole-worker SIGKILL, other pid namespace: job queued again {swept_s:.2f} s after the kill")
    # The owner's last heartbeat came at most heartbeat_interval_s before the kill.
    assert swept_s >= STALE_AFTER_S - HEARTBEAT_S
    assert done["status"] == "succeeded"
    assert done["attempts"] == 2


@pytest.mark.slow
def test_redis_restart_with_aof_loses_nothing(tmp_path):
    data_dir, port = tmp_path / "redis-data", free_port()
    redis_url, redis_process = start_redis(data_dir, port=port, appendfsync="always")
    stack = Cluster(redis_url, tmp_path)
    try:
        stack.start_api()
        stack.start_worker(concurrency=1)
        with httpx.Client(base_url=stack.api_url, timeout=30) as http:
            ids = [submit(http, SECONDS_LONG) for _ in range(3)]
            wait_until(lambda: job(http, ids[0])["status"] == "running", 60, "first job running")

            # Kill Redis mid-job: with appendfsync always, every reply came after the fsync.
            # The outage outlasts the running job, whose result write must wait for Redis.
            redis_process.kill()
            redis_process.wait()
            time.sleep(3.5)
            redis_url_again, redis_process = start_redis(data_dir, port=port, appendfsync="always")
            assert redis_url_again == redis_url

            records = [wait_ended(http, job_id, timeout_s=120) for job_id in ids]
            listed = http.get("/v1/jobs", params={"limit": 10}).json()
        assert [r["status"] for r in records] == ["succeeded"] * 3
        assert [r["attempts"] for r in records] == [1, 1, 1]
        assert listed["total"] == 3
        assert sorted(r["id"] for r in listed["items"]) == sorted(ids)
        log = stack.workers[0].log_text()
        assert all(log.count(f"job {job_id} finished: succeeded") == 1 for job_id in ids)
    finally:
        stack.stop()
        redis_process.kill()
        redis_process.wait()
