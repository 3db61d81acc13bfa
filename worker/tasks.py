"""The Celery task that runs one job and writes its progress and result to the store."""

from __future__ import annotations

import logging
import time
from functools import lru_cache

import redis
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from solvers.control import SolveControl
from solvers.run import Outcome, machine_fields, run_spec
from worker.celery_app import app
from worker.settings import get_settings
from worker.store import JobNotFound, JobStore

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def get_store() -> JobStore:
    """Return this process's store, connected on first use."""
    settings = get_settings()
    return JobStore.from_url(settings.redis_url, settings.key_prefix)


class JobTask(Task):
    """Task base that records a job as ended when Celery itself fails it.

    A hard time limit kills the process running the job, and an unexpected exception
    escapes `run_job`. In both cases Celery calls `on_failure` in the worker. Without it
    the record would stay `running` for ever.
    """

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        job_id = args[0] if args else kwargs.get("job_id")
        if job_id is None:
            return
        if isinstance(exc, TimeLimitExceeded):
            status, message = "timed_out", f"hard time limit exceeded; the process was killed ({exc})"
        else:
            status, message = "failed", f"{type(exc).__name__}: {exc}"
        logger.error("job %s: task %s failed: %s", job_id, task_id, message)
        try:
            get_store().finish(job_id, status, {"error": message})
        except (redis.RedisError, JobNotFound) as store_error:
            logger.error("job %s: failure not recorded: %s", job_id, store_error)


@app.task(name="eulerbench.run_job", bind=True, base=JobTask)
def run_job(self, job_id: str) -> str:
    """Run the job job_id from the store; return its final status."""
    store = get_store()
    try:
        record = store.start(job_id, worker=self.request.hostname or "unknown",
                             max_attempts=get_settings().max_attempts)
    except JobNotFound:
        logger.info("job %s not found in the store (deleted?); message dropped", job_id)
        return "missing"
    if record is None:
        logger.info("job %s already ended; nothing to run", job_id)
        return "skipped"

    logger.info("job %s started on %s (attempt %d): %s", job_id, record.worker,
                record.attempts, record.spec.summary())
    try:
        source = store.source_for(record.spec)
    except ValueError as exc:
        message = f"the policy to evaluate cannot be read: {exc}"
        logger.error("job %s failed: %s", job_id, message)
        store.finish(job_id, "failed", {"error": message, **machine_fields()})
        return "failed"

    control = _control(store, job_id, record.spec.time_limit_s)
    try:
        outcome = run_spec(record.spec, control, job_id=job_id, source=source)
    except SoftTimeLimitExceeded:
        logger.error("job %s passed its time limit outside the solver's own checks", job_id)
        outcome = Outcome("timed_out", {
            "error": f"time limit of {record.spec.time_limit_s:g} s exceeded",
            "history": control.history, **machine_fields()})
    if outcome.status in ("failed", "diverged"):
        logger.error("job %s %s: %s", job_id, outcome.status, outcome.fields.get("error"))
    store.finish(job_id, outcome.status, outcome.fields, outcome.parameters)
    return outcome.status


def _control(store: JobStore, job_id: str, time_limit_s: float) -> SolveControl:
    """Build the solve control that throttles progress writes and cancellation checks."""
    interval = get_settings().progress_interval_s
    last = {"progress": 0.0, "cancel": 0.0}

    def on_progress(iteration: int, residual: float, elapsed_s: float) -> None:
        now = time.monotonic()
        if now - last["progress"] >= interval:
            last["progress"] = now
            try:
                store.progress(job_id, iteration, residual, elapsed_s)
            except redis.RedisError as exc:
                logger.warning("job %s: progress not written: %s", job_id, exc)

    def on_phase(name: str) -> None:
        try:
            store.progress(job_id, control.last_iteration, control.last_residual or float("nan"),
                           time.monotonic() - control.started, phase=name)
        except redis.RedisError as exc:
            logger.warning("job %s: phase not written: %s", job_id, exc)

    def should_cancel() -> bool:
        now = time.monotonic()
        if now - last["cancel"] < interval:
            return False
        last["cancel"] = now
        try:
            return store.cancel_requested(job_id)
        except redis.RedisError as exc:
            logger.warning("job %s: cancellation flag not read: %s", job_id, exc)
            return False

    control = SolveControl(on_progress=on_progress, on_phase=on_phase, should_cancel=should_cancel,
                           deadline=time.monotonic() + time_limit_s)
    return control
