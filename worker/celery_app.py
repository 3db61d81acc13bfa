"""The Celery application: Redis broker, JSON messages only, one job at a time per process.

Run a worker with `eulerbench worker` (it wraps `celery -A worker.celery_app worker`).
"""

from __future__ import annotations

import logging
import os
import threading

import redis
from celery import Celery
from celery.signals import worker_process_init, worker_ready, worker_shutdown

from worker.settings import get_settings

logger = logging.getLogger(__name__)

QUEUES = ("cpu", "gpu")
THREADS_ENV = "EULERBENCH_WORKER_THREADS"
HEARTBEAT_S = 10  # seconds between a worker's heartbeats; its mark expires after three


def create_celery(redis_url: str | None = None) -> Celery:
    """Build the Celery app for the broker at redis_url (default: the settings' URL)."""
    settings = get_settings()
    broker = redis_url or settings.redis_url
    app = Celery("eulerbench", broker=broker, include=["worker.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="cpu",
        broker_connection_retry_on_startup=True,
        # A message unacknowledged for this long is delivered again. It must outlast the
        # longest job, or a job still running would be handed to a second worker.
        broker_transport_options={
            "visibility_timeout": int(settings.max_time_limit_s + 2 * settings.time_limit_grace_s + 600)},
        worker_hijack_root_logger=False,
    )
    return app


app = create_celery()


@worker_process_init.connect
def prepare_process(**_: object) -> None:
    """Give each worker process its share of the cores, so concurrent jobs do not contend,
    and warm it up so that its first job's timings are comparable to later ones."""
    threads = int(os.environ.get(THREADS_ENV, "0") or 0)
    if threads > 0:
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(threads)
        threadpool_limits(threads)
        logger.info("worker process %d limited to %d threads", os.getpid(), threads)

    from solvers.run import warm_up

    warm_up()


_heartbeat_stop = threading.Event()
_heartbeat_threads: list[threading.Thread] = []


def _consumed_queues(sender) -> list[str]:
    """Return the names of the queues a worker consumes."""
    try:
        return [queue.name for queue in sender.task_consumer.queues]
    except AttributeError:
        return ["cpu"]


@worker_ready.connect
def start_heartbeat(sender=None, **_: object) -> None:
    """Mark this worker's queues as served in the store until it stops."""
    from worker.store import JobStore

    settings = get_settings()
    store = JobStore.from_url(settings.redis_url, settings.key_prefix)
    hostname, queues = sender.hostname, _consumed_queues(sender)

    def beat() -> None:
        while not _heartbeat_stop.is_set():
            try:
                store.register_worker(hostname, queues, ttl_s=3 * HEARTBEAT_S)
            except redis.RedisError as exc:
                logger.warning("worker %s: heartbeat not written: %s", hostname, exc)
            _heartbeat_stop.wait(HEARTBEAT_S)
        try:
            store.unregister_worker(hostname, queues)
        except redis.RedisError as exc:
            logger.warning("worker %s: heartbeat not removed: %s", hostname, exc)

    thread = threading.Thread(target=beat, name="eulerbench-heartbeat", daemon=True)
    thread.start()
    _heartbeat_threads.append(thread)
    logger.info("worker %s ready on queues %s", hostname, ", ".join(queues))


@worker_shutdown.connect
def stop_heartbeat(**_: object) -> None:
    """Stop the heartbeat and wait briefly while it removes the worker's marks."""
    _heartbeat_stop.set()
    for thread in _heartbeat_threads:
        thread.join(timeout=2)
