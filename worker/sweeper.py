"""The stale-job sweeper: queue again the running jobs whose worker process is gone, and
send the queued jobs whose message the API never sent.

When a pool process is killed, Celery's main process puts the message back on the queue
at once (late acknowledgement with `reject_on_worker_lost`). When the whole worker is
killed, its message stays unacknowledged in Redis until the visibility timeout, which
outlasts the longest job (a day by default). The sweeper covers that case. Every
worker's main process runs it beside its heartbeat (see `worker.celery_app`), so it runs
wherever jobs can run. A lock in Redis lets one worker sweep per round.

A job counts as stale when `JobStore.attempt_alive` reports that its attempt's process is gone
(see `worker.liveness`). The sweeper sends the job's new message first and then moves
the record from running back to queued in a transaction that checks the attempt number.
A crash between the two steps leaves at worst a spare message, which `JobStore.start`
drops while another attempt runs or once the job has ended. A job that has used
`max_attempts` is recorded as failed instead. The dead worker's old message comes back
after the visibility timeout, and `JobStore.start` drops it in the same way.

A job also waits forever when the API process stops after writing its record and
before sending its message. Every new job therefore enters a set of unsent jobs, which
the API leaves once the message is sent and the worker once the job starts
(`JobStore.unsent_ids`). The sweeper sends the jobs still in it `unsent_after_s` after
their creation. A job sent twice this way runs once, for the reason above.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from solvers.record import JobRecord
from worker.settings import Settings
from worker.store import JobNotFound, JobStore, RecordUnreadable

logger = logging.getLogger(__name__)

TASK_NAME = "eulerbench.run_job"


def job_queue(record: JobRecord) -> str:
    """Return the Celery queue of a job: `gpu` for jobs that asked for one, else `cpu`."""
    return "gpu" if record.spec.device == "gpu" else "cpu"


class Sweeper:
    """Finds running jobs whose process is gone, and queues or fails them."""

    def __init__(self, store: JobStore, celery_app: Celery, settings: Settings, holder: str):
        self.store = store
        self.celery_app = celery_app
        self.settings = settings
        self.holder = holder

    def run_once(self) -> dict[str, str]:
        """Sweep once when this worker gets the round's lock; return {job_id: new status}."""
        try:
            if not self.store.acquire_sweeper_lock(self.holder, self.settings.heartbeat_interval_s):
                return {}
            return self.sweep()
        except redis.RedisError as exc:
            logger.warning("sweeper on %s: round skipped, Redis failed: %s", self.holder, exc)
            return {}

    def sweep(self) -> dict[str, str]:
        """Judge every running job and send every unsent one, and return {job_id: status after}."""
        changed = {}
        for job_id in self.store.running_ids():
            status = self._sweep_job(job_id)
            if status is not None:
                changed[job_id] = status

        created_before = time.time() - self.settings.unsent_after_s
        for job_id in self.store.unsent_ids(created_before):
            if self._send_unsent(job_id):
                changed[job_id] = "queued"
        return changed

    def _record_if(self, job_id: str, status: str, forget: Callable[[str], None]) -> JobRecord | None:
        """Return the job's record while it has status.

        Otherwise call forget(job_id), which removes the id from the set being swept, and
        return None. An unreadable record is logged and its id left in the set.
        """
        try:
            record = self.store.get(job_id)
        except JobNotFound:
            forget(job_id)
            return None
        except RecordUnreadable as exc:
            logger.error("sweeper: %s job %s skipped: %s", status, job_id, exc)
            return None
        if record.status != status:
            forget(job_id)
            return None
        return record

    def _send_unsent(self, job_id: str) -> bool:
        """Send the message of a queued job that has none, and return True when it was sent."""
        record = self._record_if(job_id, "queued", self.store.mark_sent)
        if record is None or not self._send(record):
            return False
        self.store.mark_sent(job_id)
        logger.warning("sweeper: job %s sent; it was queued at %s but its message was never sent",
                       job_id, record.created_at.isoformat())
        return True

    def _sweep_job(self, job_id: str) -> str | None:
        """Queue or fail one job if its attempt's process is gone; return its new status."""
        record = self._record_if(job_id, "running", self.store.forget_running)
        if record is None or self.store.attempt_alive(record, self.settings.stale_after_s):
            return None

        retry = record.attempts < self.settings.max_attempts
        if retry and not self._send(record):
            return None
        status = self.store.requeue_stale(job_id, record.attempts, self.settings.max_attempts,
                                          self.settings.stale_after_s)
        if status is not None:
            logger.warning("sweeper: job %s %s; attempt %d on %s stopped sending heartbeats",
                           job_id, "queued again" if status == "queued" else "failed",
                           record.attempts, record.worker)
        return status

    def _send(self, record: JobRecord) -> bool:
        """Send a new message for record's job; return False, logged, when the broker fails."""
        from worker.celery_app import job_time_limits

        soft, hard = job_time_limits(record.spec.time_limit_s, self.settings)
        try:
            self.celery_app.send_task(TASK_NAME, args=[record.id], queue=job_queue(record),
                                      soft_time_limit=soft, time_limit=hard)
        except (OperationalError, redis.RedisError) as exc:
            logger.error("sweeper: job %s not queued again, the broker failed: %s", record.id, exc)
            return False
        return True
