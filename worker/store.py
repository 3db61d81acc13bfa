"""The Redis job store: the only module that reads and writes the Redis keys of jobs.

Keys, under a configurable prefix `P`:

- `P:job:ID` is the job record as JSON (a `solvers.record.JobRecord`);
- `P:job:ID:policy` is the fitted policy's parameters as JSON;
- `P:job:ID:cancel` is set when a running job must stop;
- `P:workers:QUEUE:HOST` exists while a worker consuming QUEUE on HOST is alive
  (refreshed by its heartbeat, expiring soon after it stops), and the set
  `P:workers:QUEUE` names every HOST that has registered, so that finding the live
  workers of a queue reads two keys instead of scanning the key space;
- `P:worker:NODENAME/TOKEN` is a worker instance's latest heartbeat (`worker.liveness`),
  expiring `stale_after_s` after it was written;
- `P:jobs:running` is the set of ids of running jobs, which the stale-job sweeper reads;
- `P:sweeper:lock` is held by the worker whose sweeper runs this round;
- `P:jobs` is a sorted set of every job id scored by creation time, and
  `P:jobs:model:NAME` and `P:jobs:basis:KIND` are the same per model and basis kind;
- `P:sweep:ID` is a sweep's record as JSON (its grid, its job ids in expanded order,
  its status), and `P:sweeps` the sorted set of sweep ids scored by creation time.

Records are kept until deleted; nothing expires. Status changes are checked and written
in one optimistic transaction (WATCH/MULTI), so they only move forward
(queued -> running -> a terminal status) and a finished record is never overwritten.
The one step back is the sweeper's: a job whose worker died goes from running back to
queued, with its attempts kept. Each start counts an attempt, and a result written for
an attempt is dropped once a later attempt has started, so a worker that was taken for
dead cannot overwrite its successor. No value is larger than `max_value_bytes`.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import redis
from pydantic import ValidationError

from worker.liveness import Heartbeat, Owner, attempt_alive

from solvers.growth import GrowthModel
from solvers.policies import PolicySource, check_source_model
from solvers.record import TERMINAL_STATUSES, JobRecord, Progress, utcnow
from solvers.spec import JobSpec

logger = logging.getLogger(__name__)

MAX_PAGE = 500
JOB_ID = re.compile(r"[0-9a-f]{32}")
DEFAULT_MAX_VALUE_BYTES = 16 * 2**20
DEFAULT_STALE_AFTER_S = 45.0


# Write a record and its index entries only if the claim key (KEYS[1]) is free, and the
# claim with it. KEYS: claim, record, indexes...; ARGV: claim value, claim TTL (s),
# record JSON, index score, job id.
CREATE_CLAIMED = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('SET', KEYS[2], ARGV[3])
for i = 3, #KEYS do redis.call('ZADD', KEYS[i], ARGV[4], ARGV[5]) end
return 1
"""


@dataclass(frozen=True)
class Claim:
    """A key to set, with its value and lifetime, only if no one has set it: a
    submission's Idempotency-Key, stored with its reply."""

    key: str
    value: str
    ttl_s: int


class JobNotFound(KeyError):
    """No job has this id."""


class JobStateError(RuntimeError):
    """The job's status does not allow the requested change."""


class SweepStateError(RuntimeError):
    """The sweep's status does not allow the requested change."""


class RecordUnreadable(RuntimeError):
    """A stored record does not validate against this version's schema."""


class JobStore:
    """Create, read, update and list job records in Redis."""

    def __init__(self, client: redis.Redis, prefix: str = "eulerbench",
                 max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES):
        self.client = client
        self.prefix = prefix
        self.max_value_bytes = max_value_bytes
        self._claimed_script = client.register_script(CREATE_CLAIMED)

    @classmethod
    def from_url(cls, url: str, prefix: str = "eulerbench",
                 max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
                 socket_timeout: float | None = None) -> "JobStore":
        """Connect to the Redis at url; socket_timeout (s) bounds the wait for each reply
        (None: wait as long as the connection lives)."""
        client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=socket_timeout)
        return cls(client, prefix, max_value_bytes)

    def _key(self, job_id: str, suffix: str = "") -> str:
        """Return a job's key; an id that is not 32 hex digits names no job."""
        if not JOB_ID.fullmatch(job_id):
            raise JobNotFound(job_id)
        return f"{self.prefix}:job:{job_id}{suffix}"

    def _sweep_key(self, sweep_id: str) -> str:
        """Return a sweep's key; an id that is not 32 hex digits names no sweep."""
        if not JOB_ID.fullmatch(sweep_id):
            raise JobNotFound(sweep_id)
        return f"{self.prefix}:sweep:{sweep_id}"

    def _index(self, *parts: str) -> str:
        return ":".join([self.prefix, "jobs", *parts])

    def ping(self) -> bool:
        """Return True when Redis replies to PING."""
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def register_worker(self, hostname: str, queues: list[str], ttl_s: int) -> None:
        """Mark a worker as consuming queues for the next ttl_s seconds."""
        pipe = self.client.pipeline()
        for queue in queues:
            pipe.set(f"{self.prefix}:workers:{queue}:{hostname}", "1", ex=ttl_s)
            pipe.sadd(f"{self.prefix}:workers:{queue}", hostname)
        pipe.execute()

    def unregister_worker(self, hostname: str, queues: list[str]) -> None:
        """Remove a stopping worker's marks."""
        pipe = self.client.pipeline()
        for queue in queues:
            pipe.delete(f"{self.prefix}:workers:{queue}:{hostname}")
            pipe.srem(f"{self.prefix}:workers:{queue}", hostname)
        pipe.execute()

    def write_heartbeat(self, instance: str, heartbeat: Heartbeat, ttl_s: float) -> None:
        """Store a worker instance's heartbeat, expiring after ttl_s seconds."""
        self.client.set(f"{self.prefix}:worker:{instance}", heartbeat.to_json(),
                        px=max(1, int(ttl_s * 1000)))

    def heartbeat(self, instance: str) -> Heartbeat | None:
        """Return a worker instance's latest heartbeat, or None once it has expired."""
        return Heartbeat.from_json(self.client.get(f"{self.prefix}:worker:{instance}"))

    def attempt_alive(self, record: JobRecord, stale_after_s: float,
                      reader: Owner | None = None) -> bool:
        """Return whether the attempt recorded in record may still be running (`worker.liveness`)."""
        owner = Owner.parse(record.worker)
        heartbeat = self.heartbeat(owner.instance) if owner is not None else None
        return attempt_alive(owner, heartbeat, record.started_at, utcnow().timestamp(),
                             stale_after_s, reader)

    def running_ids(self) -> list[str]:
        """Return the ids in the set of running jobs (some may have ended since they were read)."""
        return sorted(self.client.smembers(self._index("running")))

    def acquire_sweeper_lock(self, holder: str, ttl_s: float) -> bool:
        """Take the sweeper's lock for ttl_s seconds; return False when another worker holds it."""
        return bool(self.client.set(f"{self.prefix}:sweeper:lock", holder, nx=True,
                                    px=max(1, int(ttl_s * 1000))))

    def workers(self, queue: str) -> list[str]:
        """Return the hosts of live workers consuming queue, and forget the hosts whose
        mark has expired."""
        hosts = sorted(self.client.smembers(f"{self.prefix}:workers:{queue}"))
        if not hosts:
            return []
        marks = self.client.mget([f"{self.prefix}:workers:{queue}:{host}" for host in hosts])
        gone = [host for host, mark in zip(hosts, marks) if mark is None]
        if gone:
            self.client.srem(f"{self.prefix}:workers:{queue}", *gone)
        return [host for host, mark in zip(hosts, marks) if mark is not None]

    def create(self, spec: JobSpec, submitter: str | None = None, job_id: str | None = None,
               claim: Claim | None = None) -> JobRecord | None:
        """Store a new queued job for spec and return its record.

        job_id (32 hex digits) defaults to a new random one. With a claim, one atomic step
        (one round trip) writes the claim and the record only if the claim's key does not
        exist yet. The return value is then None when the key was taken, and nothing is written.
        """
        record = JobRecord(id=job_id or uuid.uuid4().hex, status="queued", spec=spec, submitter=submitter)
        if claim is None:
            pipe = self.client.pipeline()
            self._add_job(pipe, record)
            pipe.execute()
        elif not self._create_claimed(claim, self._creation_keys(record), self._key(record.id),
                                      record.model_dump_json(), record.created_at.timestamp(), record.id):
            return None
        logger.info("job %s created: %s", record.id, spec.summary())
        return record

    def _index_keys(self, record: JobRecord) -> list[str]:
        """Return the sorted sets that list a record: all jobs, by model and by basis kind."""
        return [self._index(), self._index("model", record.spec.model.name),
                self._index("basis", record.spec.method.basis.kind)]

    def _creation_keys(self, record: JobRecord) -> list[str]:
        """Return the sorted sets a new record enters: its indexes and the set of unsent jobs."""
        return [*self._index_keys(record), self._index("unsent")]

    def _add_job(self, pipe: redis.client.Pipeline, record: JobRecord) -> None:
        """Queue the writes of a new record and its index entries on pipe."""
        score = record.created_at.timestamp()
        pipe.set(self._key(record.id), record.model_dump_json())
        for index in self._creation_keys(record):
            pipe.zadd(index, {record.id: score})

    def mark_sent(self, job_id: str) -> None:
        """Remove a job from the set of unsent jobs once its message is on the broker."""
        self.client.zrem(self._index("unsent"), job_id)

    def unsent_ids(self, created_before: float) -> list[str]:
        """Return the jobs created before that Unix time whose message was never sent.

        Every new job enters this set with its record. The API removes it after sending
        the job's message and the worker when the job starts, so an entry that stays
        means the API process stopped between writing the record and sending.
        """
        return self.client.zrangebyscore(self._index("unsent"), "-inf", created_before)

    def _create_claimed(self, claim: Claim, indexes: list[str], key: str, value: str,
                        score: float, job_id: str) -> bool:
        """Run CREATE_CLAIMED; return True when the claim was free and the record written."""
        keys = [claim.key, key, *indexes]
        return bool(self._claimed_script(keys=keys, args=[claim.value, claim.ttl_s, value, score, job_id]))

    def create_sweep(self, sweep: dict[str, Any], specs: list[JobSpec],
                     submitter: str | None = None) -> list[JobRecord]:
        """Store a sweep record and one queued job per spec in one transaction (MULTI/EXEC).

        sweep must hold an `id` (32 hex digits) and a `created_at` (ISO 8601); its
        `job_ids` are set here, in the order of specs. Either every key is written or none.
        """
        records = [JobRecord(id=uuid.uuid4().hex, status="queued", spec=spec, submitter=submitter,
                             sweep_id=sweep["id"]) for spec in specs]
        sweep["job_ids"] = [record.id for record in records]
        pipe = self.client.pipeline(transaction=True)
        for record in records:
            self._add_job(pipe, record)
        pipe.set(self._sweep_key(sweep["id"]), json.dumps(sweep))
        pipe.zadd(f"{self.prefix}:sweeps", {sweep["id"]: records[0].created_at.timestamp()})
        pipe.execute()
        logger.info("sweep %s created with %d jobs", sweep["id"], len(records))
        return records

    def get_sweep(self, sweep_id: str) -> dict[str, Any]:
        """Return the stored record of a sweep; raise JobNotFound when there is none."""
        raw = self.client.get(self._sweep_key(sweep_id))
        if raw is None:
            raise JobNotFound(sweep_id)
        return json.loads(raw)

    def sweep_ids(self, limit: int = 50, offset: int = 0) -> tuple[list[str], int]:
        """Return one page of sweep ids, newest first, and the number of sweeps."""
        index = f"{self.prefix}:sweeps"
        return self.client.zrevrange(index, offset, offset + limit - 1), self.client.zcard(index)

    def update_sweep(self, sweep_id: str,
                     change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> dict[str, Any]:
        """Apply change to a sweep record atomically (WATCH/MULTI); change returns None to
        leave it as it is. Return the record as stored afterwards."""
        key = self._sweep_key(sweep_id)
        result: list[dict[str, Any]] = [{}]

        def transaction(pipe: redis.client.Pipeline) -> None:
            raw = pipe.get(key)
            if raw is None:
                raise JobNotFound(sweep_id)
            current = json.loads(raw)
            updated = change(current)
            result[0] = current if updated is None else updated
            pipe.multi()
            if updated is not None:
                pipe.set(key, json.dumps(updated))

        self.client.transaction(transaction, key)
        return result[0]

    def get_many(self, ids: list[str]) -> list[JobRecord | None]:
        """Return the records of ids in order, None where a record no longer exists."""
        if not ids:
            return []
        records: list[JobRecord | None] = []
        for job_id, raw in zip(ids, self.client.mget([self._key(i) for i in ids])):
            records.append(None if raw is None else self._parse(job_id, raw))
        return records

    def statuses(self, ids: list[str]) -> list[str | None]:
        """Return the status of each job in ids, None where the record no longer exists.

        Cheaper than `get_many`: the records are parsed as plain JSON, not validated.
        """
        if not ids:
            return []
        raws = self.client.mget([self._key(i) for i in ids])
        return [None if raw is None else json.loads(raw).get("status") for raw in raws]

    def get(self, job_id: str) -> JobRecord:
        """Return the record of job_id; raise JobNotFound when there is none."""
        raw = self.client.get(self._key(job_id))
        if raw is None:
            raise JobNotFound(job_id)
        return self._parse(job_id, raw)

    @staticmethod
    def _parse(job_id: str, raw: str) -> JobRecord:
        """Validate a stored record; raise RecordUnreadable when this version cannot read it."""
        try:
            return JobRecord.model_validate_json(raw)
        except ValidationError as exc:
            raise RecordUnreadable(f"the stored record of job {job_id} cannot be read by this "
                                   f"version: {exc.errors()[0]['msg']} at "
                                   f"{'.'.join(map(str, exc.errors()[0]['loc']))}") from None

    def list(self, model: str | None = None, basis: str | None = None, status: str | None = None,
             limit: int = 50, offset: int = 0) -> tuple[list[JobRecord], int]:
        """Return one page of records, newest first, and the number that match the filters.

        NOTE: the status filter reads every record of the model or basis index, so it
        costs O(jobs). Millions of jobs would need a status index.
        """
        if not 1 <= limit <= MAX_PAGE or offset < 0:
            raise ValueError(f"limit must be in 1..{MAX_PAGE} and offset >= 0; "
                             f"got limit={limit}, offset={offset}")
        index = self._index("model", model) if model else self._index()
        ids = self.client.zrevrange(index, 0, -1)
        if basis:
            members = set(self.client.zrange(self._index("basis", basis), 0, -1))
            ids = [i for i in ids if i in members]
        if status is None:
            page_ids = ids[offset:offset + limit]
            return self._load_many(page_ids), len(ids)
        matching = [r for r in self._load_many(ids) if r.status == status]
        return matching[offset:offset + limit], len(matching)

    def _load_many(self, ids: list[str]) -> list[JobRecord]:
        """Return the records of ids that still exist, in order."""
        if not ids:
            return []
        raws = self.client.mget([self._key(i) for i in ids])
        records = []
        for job_id, raw in zip(ids, raws):
            if raw is None:
                continue
            try:
                records.append(JobRecord.model_validate_json(raw))
            except ValidationError as exc:
                logger.error("job %s: stored record skipped, unreadable by this version: %s",
                             job_id, exc.errors()[0]["msg"])
        return records

    def _update(self, job_id: str, change: Callable[[JobRecord], JobRecord | None],
                after: Callable[[redis.client.Pipeline, JobRecord], None] | None = None) -> JobRecord | None:
        """Apply change to the record atomically; change returns None to leave it as it is.

        after(pipe, updated) may queue more writes, which commit in the same MULTI/EXEC.
        """
        key = self._key(job_id)
        result: list[JobRecord | None] = [None]

        def transaction(pipe: redis.client.Pipeline) -> None:
            raw = pipe.get(key)
            if raw is None:
                raise JobNotFound(job_id)
            updated = change(JobRecord.model_validate_json(raw))
            result[0] = updated
            pipe.multi()
            if updated is not None:
                pipe.set(key, updated.model_dump_json())
                if after is not None:
                    after(pipe, updated)

        self.client.transaction(transaction, key)
        return result[0]

    def start(self, job_id: str, worker: str, max_attempts: int = 3,
              stale_after_s: float = DEFAULT_STALE_AFTER_S) -> JobRecord | None:
        """Mark a job running on worker; return None when it must not run here.

        worker names the process, as `NODENAME/TOKEN/PID` (see `worker.liveness`). A job
        must not run when it has ended, or when it is running in another process that may
        still be alive: that delivery is a duplicate. A job delivered again after
        max_attempts starts (its workers died each time) is recorded as failed instead.
        """
        reader = Owner.parse(worker)

        def change(record: JobRecord) -> JobRecord | None:
            if record.status in TERMINAL_STATUSES:
                logger.info("job %s already ended %s; this delivery is dropped", job_id, record.status)
                return None
            if record.status == "running" and self.attempt_alive(record, stale_after_s, reader):
                logger.warning("job %s delivered again while attempt %d may still run on %s; "
                               "this delivery is dropped", job_id, record.attempts, record.worker)
                return None
            if record.attempts >= max_attempts:
                logger.error("job %s failed: started %d times without finishing", job_id, record.attempts)
                return record.model_copy(update={
                    "status": "failed", "finished_at": utcnow(),
                    "error": f"started {record.attempts} times without finishing (workers died "
                             f"or were killed); not retried"})
            if record.status == "running":
                logger.warning("job %s delivered again (attempt %d); its process on %s is gone",
                               job_id, record.attempts + 1, record.worker)
            return record.model_copy(update={
                "status": "running", "worker": worker, "attempts": record.attempts + 1,
                "started_at": utcnow(), "progress": None})

        def after(pipe: redis.client.Pipeline, updated: JobRecord) -> None:
            pipe.zrem(self._index("unsent"), job_id)
            if updated.status == "running":
                pipe.sadd(self._index("running"), job_id)
            else:
                pipe.srem(self._index("running"), job_id)

        updated = self._update(job_id, change, after)
        return updated if updated is not None and updated.status == "running" else None

    def requeue_stale(self, job_id: str, attempt: int, max_attempts: int,
                      stale_after_s: float = DEFAULT_STALE_AFTER_S) -> str | None:
        """Put a running job whose process is gone back to `queued`, or fail it after max_attempts.

        Only attempt number attempt is judged: nothing changes when another attempt has
        started since, or when the attempt may still be alive. Returns the new status,
        or None when nothing changed. The caller sends the job's new message.
        """
        def change(record: JobRecord) -> JobRecord | None:
            if record.status != "running" or record.attempts != attempt:
                return None
            if self.attempt_alive(record, stale_after_s):
                return None
            if record.attempts >= max_attempts:
                return record.model_copy(update={
                    "status": "failed", "finished_at": utcnow(),
                    "error": f"its worker {record.worker} stopped sending heartbeats during "
                             f"attempt {record.attempts} of {max_attempts}; not retried"})
            return record.model_copy(update={"status": "queued", "progress": None})

        def after(pipe: redis.client.Pipeline, updated: JobRecord) -> None:
            pipe.srem(self._index("running"), job_id)

        updated = self._update(job_id, change, after)
        return None if updated is None else updated.status

    def forget_running(self, job_id: str) -> None:
        """Remove a job that is no longer running from the set of running jobs."""
        self.client.srem(self._index("running"), job_id)

    def progress(self, job_id: str, iteration: int, residual: float, elapsed_s: float,
                 phase: str = "solving", attempt: int | None = None) -> None:
        """Record the latest progress of a running job; ignored once it has ended, and for an
        attempt other than the latest when attempt is given."""
        def change(record: JobRecord) -> JobRecord | None:
            if record.status != "running" or (attempt is not None and record.attempts != attempt):
                return None
            progress = Progress(iteration=iteration, residual=residual, elapsed_s=elapsed_s, phase=phase)
            return record.model_copy(update={"progress": progress})

        self._update(job_id, change)

    def finish(self, job_id: str, status: str, fields: dict[str, Any],
               parameters: dict[str, Any] | None = None, attempt: int | None = None) -> bool:
        """Write a job's final status, results and policy once; return False when not written.

        Nothing is written once the job has ended, nor, when attempt is given, once a
        later attempt has started. The record, the policy and the removal of the
        cancellation flag commit together. A policy whose JSON is over max_value_bytes is
        not stored, and a line in the record's warnings gives the reason.
        """
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"finish needs a terminal status, one of {sorted(TERMINAL_STATUSES)}; "
                             f"got {status!r}")
        policy, notes = self._policy_json(job_id, parameters)
        skipped: list[str] = []

        def change(record: JobRecord) -> JobRecord | None:
            if record.status in TERMINAL_STATUSES:
                skipped.append(f"it had already ended {record.status}")
                return None
            if attempt is not None and record.attempts != attempt:
                skipped.append(f"attempt {record.attempts} started after attempt {attempt}")
                return None
            data = record.model_dump()
            data.update(fields, status=status, finished_at=utcnow())
            data["warnings"] = [*data.get("warnings", []), *notes]
            return self._fit_record(JobRecord.model_validate(data), record)

        def after(pipe: redis.client.Pipeline, updated: JobRecord) -> None:
            if policy is not None:
                pipe.set(self._key(job_id, ":policy"), policy)
            pipe.delete(self._key(job_id, ":cancel"))
            pipe.srem(self._index("running"), job_id)
            pipe.zrem(self._index("unsent"), job_id)

        written = self._update(job_id, change, after) is not None
        if written:
            logger.info("job %s finished: %s", job_id, status)
        else:
            logger.warning("job %s: its %s result was not written: %s", job_id, status, skipped[0])
        return written

    def _policy_json(self, job_id: str, parameters: dict[str, Any] | None) -> tuple[str | None, list[str]]:
        """Return the policy as JSON, or None with a warning when it is over max_value_bytes."""
        if parameters is None:
            return None, []
        policy = json.dumps(parameters)
        size = len(policy.encode())
        if size <= self.max_value_bytes:
            return policy, []
        note = (f"the fitted policy was not stored: its JSON is {size} bytes, over the limit of "
                f"{self.max_value_bytes} bytes (EULERBENCH_MAX_VALUE_BYTES)")
        logger.error("job %s: %s", job_id, note)
        return None, [note]

    def _fit_record(self, record: JobRecord, before: JobRecord) -> JobRecord:
        """Return record, dropping its history and then its diagnostics while its JSON is over
        max_value_bytes. If it is still over, return before with record's status and an error."""
        size = len(record.model_dump_json().encode())
        for name, empty in (("history", []), ("diagnostics", {})):
            if size <= self.max_value_bytes:
                return record
            note = (f"the {name} was not stored: the record's JSON was {size} bytes, over the "
                    f"limit of {self.max_value_bytes} bytes (EULERBENCH_MAX_VALUE_BYTES)")
            logger.error("job %s: %s", record.id, note)
            record = record.model_copy(update={name: empty, "warnings": [*record.warnings, note]})
            size = len(record.model_dump_json().encode())
        if size <= self.max_value_bytes:
            return record
        return before.model_copy(update={
            "status": record.status, "finished_at": record.finished_at,
            "error": f"the result was not stored: the record's JSON is {size} bytes without its "
                     f"history and diagnostics, over the limit of {self.max_value_bytes} bytes "
                     f"(EULERBENCH_MAX_VALUE_BYTES)"})

    def request_cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued job now, or ask a running one to stop; raise JobStateError once ended."""
        def change(record: JobRecord) -> JobRecord | None:
            if record.status in TERMINAL_STATUSES:
                raise JobStateError(f"job {job_id} has already ended with status {record.status!r}")
            if record.status == "queued":
                return record.model_copy(update={"status": "cancelled", "finished_at": utcnow(),
                                                 "error": "cancelled before it started"})
            return None

        updated = self._update(job_id, change)
        if updated is None:
            self.client.set(self._key(job_id, ":cancel"), "1")
            logger.info("job %s: cancellation requested while running", job_id)
            return self.get(job_id)
        logger.info("job %s cancelled while queued", job_id)
        return updated

    def cancel_queued(self, job_id: str) -> bool:
        """Cancel a job if it is still queued; return True when it was, and leave it alone
        (False) once it has started or ended."""
        def change(record: JobRecord) -> JobRecord | None:
            if record.status != "queued":
                return None
            return record.model_copy(update={"status": "cancelled", "finished_at": utcnow(),
                                             "error": "cancelled before it started"})

        cancelled = self._update(job_id, change) is not None
        if cancelled:
            logger.info("job %s cancelled while queued", job_id)
        return cancelled

    def cancel_requested(self, job_id: str) -> bool:
        """Return True when a running job has been asked to stop."""
        return self.client.exists(self._key(job_id, ":cancel")) > 0

    def get_policy(self, job_id: str) -> dict[str, Any]:
        """Return the fitted policy's parameters; raise JobNotFound when none is stored."""
        raw = self.client.get(self._key(job_id, ":policy"))
        if raw is None:
            raise JobNotFound(job_id)
        return json.loads(raw)

    def policy_source(self, job_id: str) -> PolicySource:
        """Return a finished job's spec and policy parameters, for evaluating its policy.

        Raises JobNotFound when no job has this id, and ValueError when the job has not
        ended `succeeded` or stored no policy.
        """
        record = self.get(job_id)
        if record.status != "succeeded":
            raise ValueError(f"job {job_id} is {record.status}; only the policy of a succeeded "
                             f"job can be evaluated")
        try:
            parameters = self.get_policy(job_id)
        except JobNotFound:
            raise ValueError(f"job {job_id} stored no policy") from None
        return PolicySource(job_id, record.spec, parameters)

    def source_for(self, spec: JobSpec) -> PolicySource | None:
        """Return the finished job whose policy spec's policy_evaluation residual names,
        checked against spec's model; None when spec names no job's policy.

        Raises ValueError, with the reason, when that job is unknown, unfinished, failed,
        or solved another model.
        """
        residual = spec.method.residual
        if residual.kind != "policy_evaluation" or residual.policy.kind != "job":
            return None
        job_id = residual.policy.job_id
        try:
            source = self.policy_source(job_id)
        except JobNotFound:
            raise ValueError(f"no job has id {job_id}") from None
        if spec.model.name != "growth":
            raise ValueError("policy_evaluation of a job's policy applies to the growth model only")
        check_source_model(GrowthModel.from_params(spec.model.params), source)
        return source

    def delete(self, job_id: str) -> None:
        """Delete an ended job and its policy; raise JobStateError while it is queued or running."""
        record = self.get(job_id)
        if record.status not in TERMINAL_STATUSES:
            raise JobStateError(f"job {job_id} is {record.status}; cancel it before deleting it")
        pipe = self.client.pipeline()
        pipe.delete(self._key(job_id), self._key(job_id, ":policy"), self._key(job_id, ":cancel"))
        pipe.zrem(self._index(), job_id)
        pipe.zrem(self._index("model", record.spec.model.name), job_id)
        pipe.zrem(self._index("basis", record.spec.method.basis.kind), job_id)
        pipe.zrem(self._index("unsent"), job_id)
        pipe.execute()
        logger.info("job %s deleted", job_id)
