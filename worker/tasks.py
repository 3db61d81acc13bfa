"""The Celery task that runs one job and writes its progress and result to the store."""

from __future__ import annotations

import logging
import sys
import time
from functools import lru_cache
from typing import Any, Callable, TypeVar

import redis
from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded, TimeLimitExceeded

from solvers.control import SolveControl
from solvers.record import JobRecord
from solvers.run import Outcome, machine_fields, run_spec
from worker.celery_app import app
from worker.liveness import Owner, instance_token
from worker.settings import get_settings
from worker.store import JobNotFound, JobStore

T = TypeVar("T")

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def get_store() -> JobStore:
    """Return this process's store, connected on first use."""
    settings = get_settings()
    return JobStore.from_url(settings.redis_url, settings.key_prefix, settings.max_value_bytes)


def with_redis_retry(call: Callable[[], T], what: str, job_id: str) -> T:
    """Return call(), retried while Redis is unreachable, for up to store_retry_s seconds.

    Starting a job and writing its result must outlive a Redis restart; progress writes
    need not, and are not retried. Raises the last redis.ConnectionError or TimeoutError.
    """
    deadline = time.monotonic() + get_settings().store_retry_s
    pause = 0.2
    while True:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if time.monotonic() + pause > deadline:
                raise
            logger.warning("job %s: %s failed, Redis unreachable; retrying in %.1f s: %s",
                           job_id, what, pause, exc)
            time.sleep(pause)
            pause = min(2 * pause, 2.0)


class JobTask(Task):
    """Task base that records a job as ended when Celery itself fails it.

    A hard time limit kills the process running the job, and an unexpected exception
    escapes `run_job`. In both cases Celery calls `on_failure` in the worker: for a hard
    limit in the main process, else in the pool process. Without it the record would
    stay `running` until the sweeper judged it stale.
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
            _finish_own_attempt(job_id, status, message)
        except (redis.RedisError, JobNotFound) as store_error:
            logger.error("job %s: failure not recorded: %s", job_id, store_error)


def _finish_own_attempt(job_id: str, status: str, message: str) -> None:
    """Record the end of a job whose latest attempt ran in this worker instance.

    The fields keep what the last progress write knew: the iteration and the residual,
    at most progress_interval_s old. An attempt of another worker is left alone.
    """
    store = get_store()
    record = store.get(job_id)
    owner = Owner.parse(record.worker)
    if record.status != "running" or owner is None or not owner.instance.endswith(f"/{instance_token()}"):
        logger.warning("job %s: not recorded as %s; its latest attempt is %s on %s", job_id, status,
                       record.status, record.worker)
        return
    fields: dict[str, Any] = {"error": message, "converged": False}
    if record.progress is not None:
        fields.update(iterations=record.progress.iteration, progress=record.progress.model_dump())
    with_redis_retry(lambda: store.finish(job_id, status, fields, attempt=record.attempts),
                     "recording the failure", job_id)


@app.task(name="eulerbench.run_job", bind=True, base=JobTask)
def run_job(self, job_id: str) -> str:
    """Run the job job_id from the store; return its final status."""
    store = get_store()
    settings = get_settings()
    owner = Owner.current(self.request.hostname or "unknown")
    try:
        record = with_redis_retry(
            lambda: store.start(job_id, worker=str(owner), max_attempts=settings.max_attempts,
                                stale_after_s=settings.stale_after_s),
            "starting", job_id)
    except JobNotFound:
        logger.info("job %s not found in the store (deleted?); message dropped", job_id)
        return "missing"
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        # Rejected with requeue, the message goes back on its queue. If Redis is still
        # unreachable it stays unacknowledged, and the visibility timeout restores it.
        raise Reject(f"job {job_id} not started, Redis unreachable: {exc}", requeue=True) from exc
    if record is None:
        return "skipped"

    logger.info("job %s started on %s (attempt %d): %s", job_id, record.worker,
                record.attempts, record.spec.summary())
    return _run_attempt(store, record)


def _run_attempt(store: JobStore, record: JobRecord) -> str:
    """Solve a started job and write its result for its attempt; return its final status."""
    job_id, attempt = record.id, record.attempts
    try:
        source = store.source_for(record.spec)
    except ValueError as exc:
        message = f"the policy to evaluate cannot be read: {exc}"
        logger.error("job %s failed: %s", job_id, message)
        store.finish(job_id, "failed", {"error": message, **machine_fields()}, attempt=attempt)
        return "failed"

    control = _control(store, job_id, record.spec.time_limit_s, attempt)
    on_gpu = _uses_gpu(record.spec)
    scope = reset_peak_memory(on_gpu)
    try:
        outcome = run_spec(record.spec, control, job_id=job_id, source=source)
    except SoftTimeLimitExceeded:
        logger.error("job %s passed its soft time limit outside the solver's own checks", job_id)
        outcome = Outcome("timed_out", soft_limit_fields(record.spec.time_limit_s, control))
    outcome.fields.update(peak_memory_fields(scope, on_gpu))
    if outcome.status in ("failed", "diverged"):
        logger.error("job %s %s: %s", job_id, outcome.status, outcome.fields.get("error"))
    with_redis_retry(lambda: store.finish(job_id, outcome.status, outcome.fields, outcome.parameters,
                                          attempt=attempt),
                     "writing the result", job_id)
    return outcome.status


def soft_limit_fields(time_limit_s: float, control: SolveControl) -> dict[str, Any]:
    """Return the record fields of a job stopped by Celery's soft time limit: what is known."""
    residual = control.last_residual if control.last_residual is not None else float("nan")
    return {"error": f"soft time limit exceeded while {control.current_phase}: the job ran past "
                     f"its time limit of {time_limit_s:g} s and the grace period",
            "iterations": control.last_iteration,
            "converged": False,
            "history": control.history,
            "progress": {"iteration": control.last_iteration, "residual": residual,
                         "elapsed_s": time.monotonic() - control.started,
                         "phase": control.current_phase},
            **machine_fields()}


def _uses_gpu(spec) -> bool:
    """Return True when the job will run on this worker's CUDA device."""
    if spec.device == "cpu" or spec.method.basis.kind != "nn":
        return False
    import torch

    return torch.cuda.is_available()


def reset_peak_memory(on_gpu: bool) -> str:
    """Reset this process's peak memory figures; return the scope the next reading covers.

    On Linux, writing "5" to /proc/self/clear_refs resets the peak resident set size
    (VmHWM), so the next reading covers the job alone ("job"). Where that file is absent
    or not writable, only the process's lifetime peak is known ("process").
    """
    if on_gpu:
        import torch

        torch.cuda.reset_peak_memory_stats()
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return "process"
    return "job"


def peak_memory_fields(scope: str, on_gpu: bool) -> dict[str, Any]:
    """Return the record's peak memory fields, in MiB, for the scope `reset_peak_memory` gave."""
    peak_kib = _vm_hwm_kib() if scope == "job" else None
    if peak_kib is None:
        scope, peak_kib = "process", _lifetime_peak_kib()
    fields: dict[str, Any] = {"peak_memory_scope": scope if peak_kib is not None else None,
                              "peak_memory_mb": None if peak_kib is None else peak_kib / 1024}
    if on_gpu:
        import torch

        fields["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return fields


def _vm_hwm_kib() -> float | None:
    """Return VmHWM, the peak resident set size since the last reset, in KiB (Linux)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _lifetime_peak_kib() -> float | None:
    """Return the process's peak resident set size since it started, in KiB, or None."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is in bytes on macOS and in KiB on Linux and the BSDs.
    return peak / 1024 if sys.platform == "darwin" else float(peak)


def _control(store: JobStore, job_id: str, time_limit_s: float, attempt: int) -> SolveControl:
    """Build the solve control that throttles progress writes and cancellation checks."""
    interval = get_settings().progress_interval_s
    last = {"progress": 0.0, "cancel": 0.0}

    def on_progress(iteration: int, residual: float, elapsed_s: float) -> None:
        now = time.monotonic()
        if now - last["progress"] >= interval:
            last["progress"] = now
            try:
                store.progress(job_id, iteration, residual, elapsed_s, attempt=attempt)
            except redis.RedisError as exc:
                logger.warning("job %s: progress not written: %s", job_id, exc)

    def on_phase(name: str) -> None:
        try:
            store.progress(job_id, control.last_iteration, control.last_residual or float("nan"),
                           time.monotonic() - control.started, phase=name, attempt=attempt)
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
