"""The Celery application: Redis broker, JSON messages only, one job at a time per process.

Run a worker with `eulerbench worker` (it wraps `celery -A worker.celery_app worker`).

Each worker's main process runs one background thread that, every
`heartbeat_interval_s`, registers the worker's queues, writes its heartbeat (its live
pool processes, see `worker.liveness`) and runs the stale-job sweeper
(`worker.sweeper`), which queues again the jobs of workers that stopped sending
heartbeats.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time

import redis
from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_ready, worker_shutdown

from worker.liveness import Heartbeat, instance_token, process_namespace
from worker.settings import Settings, get_settings

logger = logging.getLogger(__name__)

QUEUES = ("cpu", "gpu")
THREADS_ENV = "EULERBENCH_WORKER_THREADS"


def job_time_limits(time_limit_s: float, settings: Settings) -> tuple[float, float]:
    """Return Celery's (soft, hard) time limits, in seconds, for a job of time_limit_s seconds.

    The solver stops itself at time_limit_s. The soft limit, a grace period later, raises
    inside the task so that it records `timed_out`. The hard limit, another grace period
    later, kills the pool process even inside a blocking native call.
    """
    soft = time_limit_s + settings.time_limit_grace_s
    return soft, soft + settings.time_limit_grace_s


def visibility_timeout_s(settings: Settings) -> int:
    """Return the seconds after which Redis hands an unacknowledged message out again.

    It outlasts the hard limit of the longest job a worker may run, with ten minutes to
    spare, or a job still running would be handed to a second worker.
    """
    return int(job_time_limits(settings.max_time_limit_s, settings)[1] + 600)


def check_worker_settings(settings: Settings) -> None:
    """Raise ValueError, naming the settings, when the time limits or heartbeats cannot work."""
    soft, hard = job_time_limits(settings.max_time_limit_s, settings)
    if not soft < hard:
        raise ValueError(f"the soft time limit ({soft:g} s) must be below the hard limit ({hard:g} s): "
                         f"set EULERBENCH_TIME_LIMIT_GRACE_S above 0 "
                         f"(got {settings.time_limit_grace_s:g})")
    if not hard < visibility_timeout_s(settings):
        raise ValueError(f"the broker's visibility timeout ({visibility_timeout_s(settings)} s) "
                         f"must exceed the longest hard time limit ({hard:g} s)")
    if settings.stale_after_s < 2 * settings.heartbeat_interval_s:
        raise ValueError(f"EULERBENCH_STALE_AFTER_S ({settings.stale_after_s:g} s) must be at "
                         f"least twice EULERBENCH_HEARTBEAT_INTERVAL_S "
                         f"({settings.heartbeat_interval_s:g} s), or one late heartbeat makes "
                         f"a live worker's jobs run twice")


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
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        # Jobs keep running while the broker is away, as in a Redis restart. Their results
        # are written once it is back, so cancelling them would throw away finished work.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_transport_options={"visibility_timeout": visibility_timeout_s(settings)},
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


@worker_init.connect
def check_settings_at_start(**_: object) -> None:
    """Stop a starting worker, with the reason, when its settings cannot work; else draw the
    instance token that its pool processes inherit."""
    try:
        check_worker_settings(get_settings())
    except ValueError as exc:
        logger.critical("worker not started: %s", exc)
        # Celery logs and ignores an Exception raised by a signal handler; SystemExit stops it.
        raise SystemExit(f"error: worker not started: {exc}") from None
    instance_token()


_heartbeat_stop = threading.Event()
_heartbeat_threads: list[threading.Thread] = []


def _consumed_queues(sender) -> list[str]:
    """Return the names of the queues a worker consumes."""
    try:
        return [queue.name for queue in sender.task_consumer.queues]
    except AttributeError:
        return ["cpu"]


def _pool_pids(sender) -> list[int] | None:
    """Return the pids of the worker's pool processes; None when they cannot be read.

    The solo and thread pools run jobs in the main process, so its own pid is the list.
    """
    try:
        info = sender.pool.info
    except Exception as exc:  # the pool's internals differ between Celery versions, and it
        logger.debug("pool processes not read: %s", exc)  # is gone once the worker stops
        return None
    pids = info.get("processes") if isinstance(info, dict) else None
    return [int(pid) for pid in pids if pid] if pids is not None else [os.getpid()]


def _write_heartbeat(store, sender, instance: str, queues: list[str], settings: Settings,
                     pids: list[int] | None) -> None:
    """Register the worker's queues and write its heartbeat with the given pool pids."""
    store.register_worker(sender.hostname, queues, ttl_s=math.ceil(3 * settings.heartbeat_interval_s))
    store.write_heartbeat(instance, Heartbeat(pids, process_namespace(), time.time()),
                          ttl_s=settings.stale_after_s)


def _beat_until_stopped(store, sweeper, sender, instance: str, queues: list[str],
                        settings: Settings) -> None:
    """Write heartbeats and run the sweeper until the worker stops, then mark its pool empty.

    The sweeper waits until this worker's own heartbeats have succeeded for stale_after_s
    in a row. After Redis was away that long every heartbeat has expired, and judging
    other workers before they beat again would queue their running jobs a second time.
    """
    healthy_since = None
    while not _heartbeat_stop.is_set():
        try:
            _write_heartbeat(store, sender, instance, queues, settings, _pool_pids(sender))
            healthy_since = healthy_since or time.monotonic()
        except redis.RedisError as exc:
            healthy_since = None
            logger.warning("worker %s: heartbeat not written: %s", instance, exc)
        if healthy_since is not None and time.monotonic() - healthy_since >= settings.stale_after_s:
            sweeper.run_once()
        _heartbeat_stop.wait(settings.heartbeat_interval_s)
    try:
        # With an empty pool list, other workers treat this worker's jobs as ended at once.
        _write_heartbeat(store, sender, instance, queues, settings, [])
        store.unregister_worker(sender.hostname, queues)
    except redis.RedisError as exc:
        logger.warning("worker %s: heartbeat not removed: %s", instance, exc)


@worker_ready.connect
def start_heartbeat(sender=None, **_: object) -> None:
    """Start the thread that writes this worker's heartbeats and sweeps stale jobs."""
    from worker.store import JobStore
    from worker.sweeper import Sweeper

    settings = get_settings()
    store = JobStore.from_url(settings.redis_url, settings.key_prefix, settings.max_value_bytes)
    queues = _consumed_queues(sender)
    instance = f"{sender.hostname}/{instance_token()}"
    sweeper = Sweeper(store, sender.app, settings, holder=instance)
    thread = threading.Thread(target=_beat_until_stopped, name="eulerbench-heartbeat", daemon=True,
                              args=(store, sweeper, sender, instance, queues, settings))
    thread.start()
    _heartbeat_threads.append(thread)
    logger.info("worker %s ready on queues %s (heartbeat every %g s, stale after %g s)", instance,
                ", ".join(queues), settings.heartbeat_interval_s, settings.stale_after_s)


@worker_shutdown.connect
def stop_heartbeat(**_: object) -> None:
    """Stop the heartbeat and wait briefly while it marks the worker's pool as empty."""
    _heartbeat_stop.set()
    for thread in _heartbeat_threads:
        thread.join(timeout=2)
