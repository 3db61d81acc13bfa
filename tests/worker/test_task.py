"""The Celery task in a real worker process, driven through the broker directly."""

import time

from solvers.spec import JobSpec
from worker.celery_app import create_celery
from worker.settings import get_settings
from worker.store import JobStore

LONG_NN = {"method": {"basis": {"kind": "nn"}, "algorithm": {"kind": "adam", "steps": 1_000_000}}}


def wait_ended(store, job_id, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = store.get(job_id)
        if record.status not in ("queued", "running"):
            return record
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {record.status} after {timeout_s} s")


def test_hard_time_limit_records_timed_out(stack):
    store = JobStore.from_url(stack.redis_url, get_settings().key_prefix)
    celery = create_celery(stack.redis_url)
    record = store.create(JobSpec.model_validate(LONG_NN))
    celery.send_task("eulerbench.run_job", args=[record.id], queue="cpu", time_limit=3)

    ended = wait_ended(store, record.id)
    assert ended.status == "timed_out"
    assert "hard time limit" in ended.error

    # The killed process is replaced: the next job still runs.
    follow = store.create(JobSpec.model_validate({"method": {"basis": {"kind": "chebyshev", "degree": 4}}}))
    celery.send_task("eulerbench.run_job", args=[follow.id], queue="cpu")
    assert wait_ended(store, follow.id).status == "succeeded"


def test_unknown_job_message_dropped(stack):
    store = JobStore.from_url(stack.redis_url, get_settings().key_prefix)
    celery = create_celery(stack.redis_url)
    celery.send_task("eulerbench.run_job", args=["no-such-job"], queue="cpu")
    follow = store.create(JobSpec.model_validate({"method": {"basis": {"kind": "chebyshev", "degree": 3}}}))
    celery.send_task("eulerbench.run_job", args=[follow.id], queue="cpu")
    assert wait_ended(store, follow.id).status == "succeeded"


def test_missing_policy_source_fails_job_with_reason(stack):
    store = JobStore.from_url(stack.redis_url, get_settings().key_prefix)
    celery = create_celery(stack.redis_url)
    # Created behind the API's back, as if the source job was deleted after submission.
    record = store.create(JobSpec.model_validate({"method": {
        "basis": {"kind": "chebyshev", "degree": 4},
        "residual": {"kind": "policy_evaluation", "policy": {"kind": "job", "job_id": "f" * 32}}}}))
    celery.send_task("eulerbench.run_job", args=[record.id], queue="cpu")

    ended = wait_ended(store, record.id)
    assert ended.status == "failed"
    assert f"no job has id {'f' * 32}" in ended.error


def test_soft_limit_fields_name_the_phase():
    from solvers.control import SolveControl
    from solvers.record import Progress
    from worker.tasks import soft_limit_fields

    control = SolveControl()
    control.report(7, 1e-3)
    control.phase("evaluating accuracy")
    fields = soft_limit_fields(5.0, control)
    assert fields["error"].startswith("soft time limit exceeded while evaluating accuracy")
    assert Progress.model_validate(fields["progress"]).phase == "evaluating accuracy"
    assert fields["progress"]["iteration"] == 7
